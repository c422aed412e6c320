"""Measurement tables of any size in the paper's schema, with planted per-model scores.

``write_tables(out_dir, ...)`` writes ``vision_all.parquet`` / ``language_all.parquet`` (and,
optionally, ``vision_trained.parquet`` / ``language_trained.parquet``) with one row per
(model, subject, layer, ROI, metric), like the paper's own precomputed tables, plus
``planted_scores_{modality}.csv``: each model's brain score per metric under the default pooling
(max over ROIs per (model, subject, layer), then mean over layers and subjects), known exactly
because the generator plants it:

* per (model, subject, metric, layer) a peak value ``t = b + e`` with ``e`` of mean exactly zero
  over the model's (subject, layer) cells, so the pooled score is ``b``;
* per ROI ``score = t - scale * v`` with ``v >= 0`` and ``v = 0`` at one ROI, so the max over ROIs
  is ``t`` (``v`` carries a smooth ROI profile and a depth gradient, so profiles and UMAP have
  structure to show).

``b`` for the ``cka_*`` metrics is the paper's published per-model score of that kernel size
(``brainalign/resources/paper_*_scores.csv``) for models the paper scored, so the headline r of a
table built from real model names is the paper's (vision 0.531, language 0.885); the other
metrics get a deterministic function of ``cka_36``. Benchmark columns come from the project's
benchmark tables by model name (``benchmarks=False`` leaves them out, as a user's table may).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from brainalign.io import atomic_path, write_csv

log = logging.getLogger("brainalign")

SUBJECTS = ["subj01", "subj02", "subj05", "subj07"]
#: Layer counts drawn uniformly in these ranges (inclusive), per modality.
LAYER_RANGES = {"vision": (6, 26), "language": (17, 48)}
MEASUREMENT_COLUMNS = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature", "yeo7", "score",
                       "relative_src_feature"]


def _planted(modality: str, models: Sequence[str], metrics: Sequence[str], rng: np.random.Generator) -> pd.DataFrame:
    """Per model (rows) and metric (columns) the planted brain score."""
    from brainalign.analysis.stats import load_paper_scores

    paper = load_paper_scores(modality).set_index("model")
    out = pd.DataFrame(index=pd.Index(list(models), name="model"))
    fallback = rng.uniform(0.02, 0.08, len(models))  # models the paper did not score
    b36 = paper["cka_36"].reindex(out.index).to_numpy()
    b36 = np.where(np.isfinite(b36), b36, fallback)
    for m in metrics:
        family, _, k = m.rpartition("_") if m[-1].isdigit() else (m, "", "5")
        if family == "cka" and m in paper.columns:
            col = paper[m].reindex(out.index).to_numpy()
            out[m] = np.where(np.isfinite(col), col, b36 * 36.0 / int(k))
        elif family == "cka":
            out[m] = b36 * 36.0 / int(k)
        elif family == "cknna":
            out[m] = 0.5 * b36 + 0.001 * int(k) ** 0.5
        else:  # mutual_knn / cycle_knn: a fraction that grows with k
            out[m] = np.clip(0.5 * b36 + int(k) / 2000.0, 0.0, 0.95)
    return out


def model_block(model_index: int, n_layers: int, planted: np.ndarray, n_subjects: int, n_rois: int,
                rng: np.random.Generator) -> np.ndarray:
    """Scores of one model, shape (subjects, metrics, layers, ROIs), with max over ROIs per
    (subject, metric, layer) = ``t`` and the mean of ``t`` over (subject, layer) = ``planted``."""
    n_metrics = len(planted)
    e = rng.normal(0.0, 0.15, (n_subjects, n_metrics, n_layers)) * planted[None, :, None]
    e -= e.mean(axis=(0, 2), keepdims=True)
    t = planted[None, :, None] + e
    depth = np.linspace(0.0, 1.0, n_layers)
    roi_axis = np.linspace(-1.0, 1.0, n_rois)
    profile = (roi_axis[None, :] - (2 * depth[:, None] - 1)) ** 2  # the best ROI moves with depth
    v = profile[None, None] + rng.exponential(0.3, (n_subjects, n_metrics, n_layers, n_rois))
    v -= v.min(axis=3, keepdims=True)
    return t[..., None] - (0.2 * planted)[None, :, None, None] * v


def _dictionary(codes: np.ndarray, values: Sequence[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(list(values)))


def write_table(path: Path, modality: str, models: Sequence[str], metrics: Sequence[str], n_subjects: int = 4,
                n_rois: int = 180, seed: int = 0, benchmarks: bool = True,
                layers: dict[str, int] | None = None, extra_columns: dict[str, dict] | None = None) -> pd.DataFrame:
    """One table (row groups of one model each, dictionary-encoded strings); returns the planted scores
    (one row per model: ``model``, ``n_layers`` and one column per metric)."""
    from brainalign import resources as res
    from brainalign.analysis.stats import load_paper_scores
    from brainalign.models.registry import ModelEntry
    from brainalign.pipeline import benchmark_columns

    paper = load_paper_scores(modality).set_index("model")

    rng = np.random.default_rng(seed)
    parcels = res.hcp_parcels().iloc[:n_rois]
    rois, yeo = list(parcels["name"]), list(parcels["yeo7"])
    yeo_names = sorted(set(yeo))
    yeo_codes = np.array([yeo_names.index(y) for y in yeo])
    subjects = (SUBJECTS[:n_subjects] if n_subjects <= len(SUBJECTS)
                else [f"subj{i:02d}" for i in range(1, n_subjects + 1)])
    planted = _planted(modality, models, metrics, rng)
    lo, hi = LAYER_RANGES[modality]
    n_layers = {m: (layers or {}).get(m) or int(rng.integers(lo, hi + 1)) for m in models}
    bench_cols = (res.VISION_BENCHMARK_COLUMNS + ["arch"]) if modality == "vision" else res.LANGUAGE_BENCHMARK_COLUMNS
    writer = None
    t0 = time.perf_counter()
    with atomic_path(path) as tmp:
        try:
            for i, model in enumerate(models):
                L = n_layers[model]
                scores = model_block(i, L, planted.loc[model].to_numpy(float), n_subjects, n_rois, rng)
                S, M, R = n_subjects, len(metrics), n_rois
                shape = (S, M, L, R)
                idx = np.indices(shape, dtype=np.int32).reshape(4, -1)
                n = idx.shape[1]
                cols = {
                    "src_model": _dictionary(np.zeros(n, np.int32), [model]),
                    "tgt_model": _dictionary(idx[0], subjects),
                    "metric": _dictionary(idx[1], metrics),
                    "src_feature": pa.array(idx[2].astype(np.int64)),
                    "tgt_feature": _dictionary(idx[3], rois),
                    "yeo7": _dictionary(yeo_codes[idx[3]], yeo_names),
                    "score": pa.array(scores.reshape(-1)),
                    "relative_src_feature": pa.array(np.floor(idx[2] / L * 8).astype(np.int64)),
                }
                if benchmarks:  # the paper's own benchmark figures where it has the model
                    values = (paper.loc[model].to_dict() if model in paper.index else benchmark_columns(
                        ModelEntry(name=model, modality=modality, source="timm", architecture=model, benchmark=model)))
                    for c in bench_cols:
                        v = values.get(c)
                        cols[c] = (pa.array([v] * n, pa.string()) if c == "arch"
                                   else pa.array(np.full(n, np.nan if v is None else float(v))))
                for c, per_model in (extra_columns or {}).items():
                    v = per_model[model]
                    cols[c] = pa.array(np.full(n, v)) if not isinstance(v, str) else pa.array([v] * n)
                batch = pa.table(cols)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema, compression="zstd")
                writer.write_table(batch)
                if (i + 1) % 100 == 0:
                    log.info("%s: %d/%d models (%.0f s)", path.name, i + 1, len(models), time.perf_counter() - t0)
        finally:
            if writer is not None:
                writer.close()
    out = planted.reset_index()
    out.insert(1, "n_layers", out["model"].map(n_layers))
    return out


def paper_models(modality: str) -> list[str]:
    """The models of the paper's published per-model scores (594 vision, 36 language)."""
    from brainalign.analysis.stats import load_paper_scores

    return list(load_paper_scores(modality)["model"])


def write_tables(out_dir: str | Path, n_vision: int | None = None, n_language: int | None = None,
                 metrics: Sequence[str] | str = "all", n_subjects: int = 4, n_rois: int = 180, seed: int = 0,
                 benchmarks: bool = True, trained: bool = True) -> dict[str, pd.DataFrame]:
    """``vision_all.parquet``, ``language_all.parquet`` (the paper's first ``n_vision`` /
    ``n_language`` models; None = all 594 / 36) and, with ``trained``, checkpoint tables
    (``language_trained.parquet``: Pythia-deduped 70m steps of the project's registry;
    ``vision_trained.parquet``: a run of 8 epochs with ``run``/``step`` columns), under ``out_dir``,
    each with its ``planted_scores_*.csv``. Returns the planted scores per table name."""
    from brainalign.alignment.metrics import resolve_metrics

    out_dir = Path(out_dir)
    names = [s.name for s in resolve_metrics(metrics)]
    planted = {}
    for k, (modality, n) in enumerate((("vision", n_vision), ("language", n_language))):
        models = paper_models(modality)[: n if n is not None else None]
        if not models:
            continue
        planted[f"{modality}_all"] = write_table(out_dir / f"{modality}_all.parquet", modality, models, names,
                                                 n_subjects, n_rois, seed + k, benchmarks)
    if trained:
        steps = [0, 1, 8, 64, 512, 4000, 32000, 128000]  # steps of config/registry/pythia_checkpoints.yaml
        pythia = [f"EleutherAI/pythia-70m-deduped@step{s}" for s in steps]
        planted["language_trained"] = write_table(out_dir / "language_trained.parquet", "language", pythia, names,
                                                  n_subjects, n_rois, seed + 2, False,
                                                  layers={m: 7 for m in pythia})
        epochs = [1, 2, 4, 8, 16, 32, 64, 128]
        mixnet = [f"mixnet_s.run0_epoch{e}" for e in epochs]
        planted["vision_trained"] = write_table(
            out_dir / "vision_trained.parquet", "vision", mixnet, names, n_subjects, n_rois, seed + 3, False,
            layers={m: 8 for m in mixnet},
            extra_columns={"run": {m: "mixnet_s.run0" for m in mixnet}, "step": dict(zip(mixnet, epochs, strict=True))})
    for name, df in planted.items():
        write_csv(df, out_dir / f"planted_scores_{name}.csv")
    return planted
