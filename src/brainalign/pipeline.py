"""The workflow's stages as plain functions: each reads files, writes one output atomically.

``scripts/*.py`` (the Snakemake rule entry points) call these with the rule's
inputs, outputs and params; users can call them directly too.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.io import InputError, write_csv, write_parquet
from brainalign.models import ModelEntry, load_registry, lookup
from brainalign.nsd import NSDLayout

log = logging.getLogger("brainalign")

TABLE_COLUMNS = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature", "yeo7", "score",
                 "relative_src_feature"]
# Chance-level top-1 for untrained copies: 1/1000 classes, 1/200 on the 200-class sets.
CHANCE_TOP1 = {"imagenet": 1e-3, "imagenet-a": 5e-3, "imagenet-a-clean": 5e-3, "imagenet-r": 5e-3,
               "imagenet-r-clean": 5e-3, "imagenet-real": 1e-3, "imagenetv2-matched-frequency": 1e-3,
               "sketch": 1e-3}


def make_mini_nsd(root: Path, registry: Path, vision_model: str, language_model: str, seed: int = 0) -> None:
    """Generate the mini-NSD under ``root`` (see :mod:`brainalign.mini_nsd`)."""
    from brainalign.mini_nsd import MiniNSDSpec, generate

    reg = load_registry(registry)
    generate(Path(root), lookup(reg, vision_model, "mini_nsd.vision_model"),
             lookup(reg, language_model, "mini_nsd.language_model"), MiniNSDSpec(seed=seed))


def mini_nsd_outputs(root: str, subjects: Sequence[str]) -> list[str]:
    """Every file the mini-NSD generator writes (for the rule's output list)."""
    from brainalign.mini_nsd import MiniNSDSpec

    spec = MiniNSDSpec()
    layout = NSDLayout(Path(root))
    n_sessions = math.ceil((spec.n_shared + spec.n_unique) * spec.repeats / spec.trials_per_session)
    files = [layout.expdesign, layout.stim_info, layout.stimuli, layout.parcel_table,
             layout.captions("train2017"), layout.captions("val2017"), Path(root) / "ground_truth.json"]
    for s in spec.subjects:
        files += [layout.responses(s), layout.parcel_volume(s)]
        files += [layout.betas(s, k) for k in range(1, n_sessions + 1)]
    return [str(f) for f in files]


def write_stimuli(nsd_root: Path, subject: str, split: str, out: Path) -> None:
    """One subject's stimuli (73KID ``nsd_id``, ``coco_id``, first ``caption``) as CSV."""
    from brainalign.nsd import subject_stimuli

    write_csv(subject_stimuli(NSDLayout(nsd_root), subject, split), out)


def ingest(nsd_root: Path, subject: str, split: str, rois, zscore_sessions: bool, out: Path) -> None:
    """One subject's per-ROI responses, averaged over repeats, to HDF5."""
    from brainalign.nsd import load_roi_responses, write_brain

    ids, responses = load_roi_responses(NSDLayout(nsd_root), subject, rois, split, zscore_sessions)
    log.info("%s: %d stimuli, %d ROIs", subject, len(ids), len(responses))
    write_brain(Path(out), subject, split, ids, responses)


def extract(registry: Path, model: str, stimuli_csvs: Sequence[Path], nsd_root: Path, device: str,
            outs: Sequence[Path], batch_size: int = 32) -> None:
    """Every layer of ``model`` for each stimulus set (one subject each), from one model load.

    ``stimuli_csvs[i]`` (columns nsd_id, caption) gives the stimuli of ``outs[i]`` (HDF5, float16).
    """
    from brainalign.features import load_model, write_features

    entry = lookup(load_registry(registry), model, "vision_models/language_models")
    loaded = load_model(entry, device)
    for csv, out in zip(stimuli_csvs, outs, strict=True):
        stimuli = pd.read_csv(csv)
        names, layers, meta = loaded.extract(stimuli, NSDLayout(nsd_root).stimuli, batch_size)
        log.info("%s on %s: %d stimuli, %d layers, dims %s", model, csv, len(stimuli), len(layers),
                 [x.shape[1] for x in layers])
        write_features(Path(out), model, stimuli["nsd_id"].to_numpy(), names, layers, meta)


def align_job(brain_h5: Path, features_h5: Path, model: str, subject: str, metrics, device: str,
              out: Path) -> None:
    """Every layer x ROI x metric of one (subject, model), to parquet."""
    from brainalign.features import read_features, resolve_device
    from brainalign.metrics import score_matrices
    from brainalign.nsd import read_brain

    ids, rois = read_brain(Path(brain_h5))
    names, layers, _ = read_features(Path(features_h5), expected_ids=ids)
    mats = score_matrices(layers, list(rois.values()), metrics, resolve_device(device))
    frames = []
    for metric, mat in mats.items():
        frames.append(pd.DataFrame({
            "src_model": model,
            "tgt_model": subject,
            "metric": metric,
            "src_feature": np.repeat(np.arange(len(layers)), len(rois)),
            "tgt_feature": np.tile(list(rois), len(layers)),
            "score": mat.reshape(-1),
            "n_layers": len(layers),
        }))
    write_parquet(pd.concat(frames, ignore_index=True), out)


def benchmark_columns(entry: ModelEntry) -> dict:
    """Benchmark columns of one model (NaN where the tables have none)."""
    from brainalign import resources as res

    if entry.modality == "vision":
        cols = res.VISION_BENCHMARK_COLUMNS
        table = res.vision_benchmarks().set_index("model")
        out = {c: np.nan for c in cols} | {"arch": None}
        key = entry.benchmark
        if key is None and entry.extra.get("chance_benchmarks"):
            base = table[table.index.str.split(".").str[0] == entry.architecture]
            out |= dict(CHANCE_TOP1)
            if len(base):
                out["#Params (M)"] = base["#Params (M)"].iloc[0]
                out["arch"] = base["arch"].iloc[0]
        elif key is not None and key in table.index:
            out |= {c: table.loc[key, c] for c in cols} | {"arch": table.loc[key, "arch"]}
        return out
    cols = res.LANGUAGE_BENCHMARK_COLUMNS
    table = res.language_benchmarks().set_index("model")
    out = {c: np.nan for c in cols}
    if entry.benchmark is not None and entry.benchmark in table.index:
        out |= {c: table.loc[entry.benchmark, c] for c in cols}
    return out


def aggregate(alignment_files: Sequence[Path], registry: Path, out: Path) -> None:
    """One modality's table: the paper's columns, then the benchmark columns."""
    from brainalign.resources import hcp_parcels

    reg = load_registry(registry)
    yeo = dict(zip(hcp_parcels()["name"], hcp_parcels()["yeo7"], strict=True))
    frames = []
    for f in alignment_files:
        df = pd.read_parquet(f)
        model = df["src_model"].iloc[0]
        df["yeo7"] = df["tgt_feature"].map(yeo)
        df["relative_src_feature"] = np.floor(df["src_feature"] / df["n_layers"] * 8).astype(int)
        df = df[TABLE_COLUMNS].copy()
        for col, val in benchmark_columns(reg[model]).items():
            df[col] = val
        frames.append(df)
    if not frames:
        raise InputError(f"{out}: no alignment results to aggregate (the config lists no models of this modality)")
    table = pd.concat(frames, ignore_index=True)
    write_parquet(table, out)
