"""Align batches: which models of a subject share one align job (config key ``align_batch``).

An align job computes the brain's kernel blocks once and scores every layer of every model in
its batch against them, so the ROI side of the work is shared by the batch (see the README's
"Speed and memory"). Each job writes one scores file (and one nulls file) per (subject, batch);
a batch of one model is named after the model, so ``align_batch: 1`` keeps one file per
(subject, model).

Batches must not move when the selection grows: a model added to a finished run forms a new
batch (of the models not yet in one), so no finished job sees its inputs change and reruns.
The batches are therefore recorded in a small JSON file beside the alignment files
(:func:`read_record`, :func:`write_record`) and :func:`plan_batches` keeps the recorded ones:

- a recorded batch keeps its members that are still selected (a deselected model leaves its
  batch, which then reruns with the rest: its input files changed);
- a recorded batch none of whose jobs has written anything yet is dissolved, so models planned
  but never run are grouped afresh with the models added since;
- the models in no batch are chunked in selection order, ``size`` at a time, per modality
  (a table reads the batches of its modality only).

Without a record (a fresh run, or the file deleted) the batches are the selection chunked in
order: the same as a fresh run, whatever was recorded before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from brainalign.io import InputError, atomic_path

#: version of the record's format; a record of another version is ignored (the batches are re-planned)
RECORD_FORMAT = 1


def batch_id(members: Sequence[str]) -> str:
    """A batch's name in file names: its one model's name, or ``<first model>+<number of the others>``
    (a model is in one batch at a time, so the first member names the batch)."""
    if not members:
        raise ValueError("a batch has at least one model")
    return members[0] if len(members) == 1 else f"{members[0]}+{len(members) - 1}"


def plan_batches(models: Mapping[str, Sequence[str]], size: int,
                 recorded: Mapping[str, Sequence[Sequence[str]]] | None = None,
                 started: Callable[[str], bool] = lambda batch: True,
                 key: str = "align_batch") -> dict[str, list[tuple[str, ...]]]:
    """Per modality, the batches (tuples of model names) that cover its selected ``models``.

    ``recorded``: the batches of an earlier plan (:func:`read_record`); ``started(batch_id)``: whether
    any of that batch's jobs has written its output (a recorded batch that has not is dissolved).
    ``key``: the config key of ``size``, named by the error on a bad one.
    """
    if int(size) < 1:
        raise InputError(f"config key '{key}': {size} (must be an integer >= 1)")
    size = int(size)
    recorded = recorded or {}
    placed: set[str] = set()
    out: dict[str, list[tuple[str, ...]]] = {}
    for modality, names in models.items():
        selected = set(names)
        kept = []
        for batch in recorded.get(modality, ()):
            # a deselected member leaves its batch (the rest rerun together); a batch never started dissolves
            members = tuple(m for m in batch if m in selected and m not in placed)
            if members and started(batch_id(tuple(batch))):
                kept.append(members)
                placed.update(members)
        pending = [m for m in names if m not in placed]
        kept += [tuple(pending[i:i + size]) for i in range(0, len(pending), size)]
        placed.update(pending)
        order = {m: i for i, m in enumerate(names)}
        out[modality] = sorted(kept, key=lambda b: order[b[0]])  # the same order however the jobs ran
    return out


def read_record(path: str | os.PathLike) -> dict[str, list[list[str]]]:
    """The batches recorded at ``path`` (modality -> batches); none if the file does not exist or
    holds another format version."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != RECORD_FORMAT:
            return {}
        batches = data["batches"]
        if not all(isinstance(b, list) and all(isinstance(m, str) for m in b) and b
                   for groups in batches.values() for b in groups):
            raise ValueError("a batch is not a non-empty list of model names")
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise InputError(f"{path}: not a batch record ({exc}); delete it (the align batches are then planned "
                         "afresh in selection order)") from None
    return {mod: [list(b) for b in groups] for mod, groups in batches.items()}


def write_record(path: str | os.PathLike, batches: Mapping[str, Sequence[Sequence[str]]]) -> bool:
    """Record ``batches`` at ``path`` (atomically) unless it already holds them; True if written."""
    data = {"format": RECORD_FORMAT, "batches": {mod: [list(b) for b in groups] for mod, groups in batches.items()}}
    path = Path(path)
    if path.exists():
        try:
            if json.loads(path.read_text()) == data:
                return False
        except ValueError:
            pass
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
    return True
