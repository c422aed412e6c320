"""Model-to-model alignment (convergence): which models are scored against which, and the rows a job writes.

The same engine that aligns a model's layers with a subject's parcels aligns them with another
model's layers: the *partner* model takes the subject's place (its layers are the targets, as the
parcels are). A job scores a batch of source models against a batch of partner models on one
stimulus set (config key ``convergence``): every (source layer, partner layer) pair under every
configured metric, in one engine call, so each side's kernel blocks are formed once per job.

Pair kinds are named ``<source modality>_<partner modality>``:

- ``language_vision`` (the default): language models on the images' captions against vision models
  on the images, platonic-rep's cross-modal comparison. The language side is the source, streamed in
  groups of layers within the memory budget (the deepest models are language models); the vision
  side, held whole, is small;
- ``vision_language``: the same pairs the other way round (what differs: the direction of the
  asymmetric metrics, ``cycle_knn`` and ``ridge``, which predict the partner from the source);
- ``vision_vision``, ``language_language``: within a modality, each unordered pair once (the batch
  grid's upper triangle; a model is never scored against itself).

Batches are the align batches' planner (:mod:`brainalign.alignment.batches`) with their own record, so a
model added to a finished run forms new batches and only the jobs that involve them run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

#: the pair kinds, ``<source modality>_<partner modality>``
KINDS = ("language_vision", "vision_language", "vision_vision", "language_language")
#: a job file's columns (the partner model and layer in place of the subject and parcel)
JOB_COLUMNS = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature", "score", "n_layers",
               "tgt_n_layers"]


def kind_modalities(kind: str) -> tuple[str, str]:
    """``(source modality, partner modality)`` of a pair kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; known: {', '.join(KINDS)}")
    src, tgt = kind.split("_")
    return src, tgt


def job_pairs(batches: Mapping[str, Sequence[str]], kinds: Sequence[str]) -> list[tuple[str, str, str]]:
    """Every job ``(kind, source batch id, partner batch id)``: per kind, each source batch against each
    partner batch of the other modality, or within a modality each batch with itself and the batches after
    it (``batches``: modality -> batch ids in plan order)."""
    jobs = []
    for kind in kinds:
        src, tgt = kind_modalities(kind)
        a, b = list(batches.get(src, ())), list(batches.get(tgt, ()))
        if src != tgt:
            jobs += [(kind, x, y) for x in a for y in b]
        else:
            jobs += [(kind, a[i], a[j]) for i in range(len(a)) for j in range(i, len(a))]
    return jobs


def job_frame(mats: Mapping[str, np.ndarray], src_models: Sequence[str], src_layers: Sequence[int],
              tgt_models: Sequence[str], tgt_layers: Sequence[int], within: bool = False) -> pd.DataFrame:
    """A job's rows from the engine's matrices (``{metric: (S, T)}``, the sources' layers model after model
    by rows, the partners' by columns): one row per (source model, partner model, metric, source layer,
    partner layer). ``within``: a within-modality job, where a model is not scored against itself and, on
    the grid's diagonal batch, each unordered pair appears once (the source listed first in the batch)."""
    src_start = np.concatenate([[0], np.cumsum(src_layers)]).astype(int)
    tgt_start = np.concatenate([[0], np.cumsum(tgt_layers)]).astype(int)
    frames = []
    for i, a in enumerate(src_models):
        for j, b in enumerate(tgt_models):
            if within and (a == b or (b in src_models and src_models.index(b) < i and a in tgt_models)):
                continue
            na, nb = int(src_layers[i]), int(tgt_layers[j])
            for metric, mat in mats.items():
                block = np.asarray(mat)[src_start[i]:src_start[i + 1], tgt_start[j]:tgt_start[j + 1]]
                frames.append(pd.DataFrame({
                    "src_model": a,
                    "tgt_model": b,
                    "metric": metric,
                    "src_feature": np.repeat(np.arange(na), nb),
                    "tgt_feature": np.tile(np.arange(nb), na),
                    "score": block.reshape(-1),
                    "n_layers": na,
                    "tgt_n_layers": nb,
                }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "score" else object) for c in JOB_COLUMNS})
    return pd.concat(frames, ignore_index=True)[JOB_COLUMNS]
