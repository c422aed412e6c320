"""Convergence statistics: model-to-model tables, pooled per model pair, set beside performance and brain scores.

The tables (:func:`aggregate_convergence`) have the brain tables' layout with the partner model in
place of the subject and the partner's layer in place of the parcel:

==================  ========  ===============================================================
column              type      meaning
==================  ========  ===============================================================
src_model           string    the source model (the pair kind's first modality)
tgt_model           string    the partner model (the pair kind's second modality)
metric              string    metric variant (``mutual_knn_10``, ``cka_36``, ...)
src_feature         int64     the source's layer (0 = the first hidden state)
tgt_feature         int64     the partner's layer
score               float64   the alignment
n_layers            int64     the source's number of layers
tgt_n_layers        int64     the partner's number of layers
==================  ========  ===============================================================

From a table, :func:`pair_scores` pools each (source, partner, metric) over its layer pairs (config key
``convergence: pooling``): ``max`` (the best layer pair, platonic-rep's choice and the default),
``mean`` (every layer pair), or ``last`` (the last layer of each). Every query runs in DuckDB on the
parquet file, so a table of any size is never held in memory.

:func:`model_convergence` gives each model one convergence score per metric: the mean of its pooled
scores over its cross-modal partners. :func:`convergence_correlations` correlates it with each
model's task performance (platonic-rep's central plot: cross-modal alignment vs language-model
performance) and with its brain score (do the models that align better with brains align better with
each other?), with the robustness columns of :mod:`brainalign.analysis.robustness` (bootstrap and
family-cluster bootstrap intervals, permutation p, partial r given log parameters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from brainalign.io import InputError, Progress, atomic_path, release_memory

POOLINGS = ("max", "mean", "last")
TABLE_COLUMNS = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature", "score", "n_layers",
                 "tgt_n_layers"]


def table_schema() -> pa.Schema:
    text = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([pa.field("src_model", text), pa.field("tgt_model", text), pa.field("metric", text),
                      pa.field("src_feature", pa.int64()), pa.field("tgt_feature", pa.int64()),
                      pa.field("score", pa.float64()), pa.field("n_layers", pa.int64()),
                      pa.field("tgt_n_layers", pa.int64())])


def _check_pair(path, df: pd.DataFrame, metrics: tuple | None) -> tuple:
    """One (source, partner) pair's rows: layers x partner layers x metrics, no key twice, and the same
    metrics as the first pair. Returns the metrics."""
    found = tuple(sorted(df["metric"].unique()))
    na, nb = int(df["n_layers"].iloc[0]), int(df["tgt_n_layers"].iloc[0])
    want = na * nb * len(found)
    if len(df) != want or df.duplicated(["src_feature", "tgt_feature", "metric"]).any():
        a, b = df["src_model"].iloc[0], df["tgt_model"].iloc[0]
        raise InputError(f"{path}: {a} x {b} has {len(df)} rows, expected {na} x {nb} layers x {len(found)} "
                         f"metrics = {want} with no key twice (delete it and rerun its converge job)")
    if metrics is not None and found != metrics:
        raise InputError(f"{path}: metrics {list(found)} differ from the other files' {list(metrics)} "
                         "(delete it and rerun its converge job)")
    return found


def aggregate_convergence(files: Sequence[str | Path], out: str | Path) -> None:
    """One pair kind's table from its job files, one file at a time (each model pair one row group), so
    memory stays at one job's rows; each pair's rows are checked first and the first bad file is named."""
    import pyarrow.parquet as pq

    if not files:
        raise InputError(f"{out}: no convergence results to aggregate (the config selects no model pairs)")
    schema, metrics, rows = table_schema(), None, 0
    progress = Progress(len(files), f"aggregate {Path(out).name}", "job files")
    with atomic_path(out) as tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        try:
            for f in files:
                progress.step()
                job = pd.read_parquet(f)
                for _, df in job.groupby(["src_model", "tgt_model"], sort=False, observed=True):
                    metrics = _check_pair(f, df, metrics)
                    writer.write_table(pa.Table.from_pandas(df[TABLE_COLUMNS], schema=schema, preserve_index=False))
                    rows += len(df)
                del job
                release_memory()
        finally:
            writer.close()


def check_convergence_table(path: str | Path) -> None:
    """A user's convergence table (tables mode): the columns above, else a one-line error naming the file."""
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a non-parquet file
        raise InputError(f"{path}: not a parquet file ({exc})") from None
    missing = [c for c in TABLE_COLUMNS if c not in names]
    if missing:
        raise InputError(f"{path}: no column(s) {missing} (a convergence table needs {', '.join(TABLE_COLUMNS)})")


def pair_scores(path: str | Path, pooling: str = "max", con=None) -> pd.DataFrame:
    """Per (source, partner, metric) the pooled score over layer pairs, with the layer pair it came from
    (``max``: the best pair; ``last``: the last layers; ``mean``: NaN layers), in DuckDB on the file."""
    from brainalign.analysis.tables import _df, _lit, connect

    if pooling not in POOLINGS:
        raise InputError(f"config key 'convergence: pooling': {pooling!r} (one of {', '.join(POOLINGS)})")
    con = con or connect()
    src = f"read_parquet({_lit(path)})"
    keys = "src_model::VARCHAR AS src_model, tgt_model::VARCHAR AS tgt_model, metric::VARCHAR AS metric"
    group = "GROUP BY 1, 2, 3"
    if pooling == "max":
        q = (f"SELECT {keys}, max(score) AS score, arg_max(src_feature, score) AS src_layer, "
             f"arg_max(tgt_feature, score) AS tgt_layer, any_value(n_layers) AS n_layers, "
             f"any_value(tgt_n_layers) AS tgt_n_layers FROM {src} WHERE NOT isnan(score) {group}")
    elif pooling == "mean":
        q = (f"SELECT {keys}, avg(score) AS score, NULL::BIGINT AS src_layer, NULL::BIGINT AS tgt_layer, "
             f"any_value(n_layers) AS n_layers, any_value(tgt_n_layers) AS tgt_n_layers FROM {src} "
             f"WHERE NOT isnan(score) {group}")
    else:
        q = (f"SELECT {keys}, any_value(score) AS score, any_value(src_feature) AS src_layer, "
             f"any_value(tgt_feature) AS tgt_layer, any_value(n_layers) AS n_layers, "
             f"any_value(tgt_n_layers) AS tgt_n_layers FROM {src} "
             f"WHERE src_feature = n_layers - 1 AND tgt_feature = tgt_n_layers - 1 {group}")
    df = _df(con, q + " ORDER BY 1, 2, 3")
    df["pooling"] = pooling
    return df


def model_convergence(pairs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Each model's convergence per metric: the mean of its pooled scores over its partners of the other
    modality (cross-modal kinds only; a model is scored from either side of a pair). Columns ``model``,
    ``modality``, ``metric``, ``convergence``, ``n_partners``."""
    from brainalign.alignment.convergence import kind_modalities

    parts = []
    for kind, df in pairs.items():
        src, tgt = kind_modalities(kind)
        if src == tgt or df.empty:
            continue
        for col, modality in (("src_model", src), ("tgt_model", tgt)):
            g = df.groupby([col, "metric"], sort=False)["score"]
            parts.append(pd.DataFrame({"convergence": g.mean(), "n_partners": g.count()}).reset_index()
                         .rename(columns={col: "model"}).assign(modality=modality, kind=kind))
    cols = ["modality", "model", "metric", "convergence", "n_partners"]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    # a model in both cross kinds (language_vision and vision_language): the mean of the two
    out = out.groupby(["modality", "model", "metric"], sort=False).agg(
        convergence=("convergence", "mean"), n_partners=("n_partners", "max")).reset_index()
    return out[cols].sort_values(["modality", "metric", "model"], ignore_index=True)


def convergence_correlations(models: pd.DataFrame, scores: Mapping[str, pd.DataFrame],
                             benchmarks: Mapping[str, str], brain_metric: str, families: Mapping[str, str],
                             n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Per (modality, convergence metric, against) the correlation of the models' convergence with their
    benchmark (``against = benchmark``) and with their brain score (``against = brain_score``,
    ``brain_metric`` of ``scores``: the model-scores tables, per modality), with every column of
    :data:`brainalign.analysis.robustness.ROBUSTNESS_COLUMNS` (models lacking a value are left out)."""
    from brainalign.analysis.robustness import ROBUSTNESS_COLUMNS, robustness_row

    rows = []
    for (modality, metric), d in models.groupby(["modality", "metric"], sort=False):
        per_model = scores.get(modality)
        bench = benchmarks.get(modality)
        d = d.set_index("model")
        frame = pd.DataFrame({"convergence": d["convergence"]})
        if per_model is not None:
            s = per_model.set_index("model")
            for col in [bench, "#Params (M)", "#Params (B)", "n_layers"]:
                if col and col in s.columns:
                    frame[col] = s[col].reindex(frame.index)
            frame["brain_score"] = s[brain_metric].reindex(frame.index) if brain_metric in s.columns else np.nan
        else:
            frame["brain_score"] = np.nan
        if bench and bench not in frame.columns:
            frame[bench] = np.nan
        fams = [families.get(m, m) for m in frame.index]
        for against in (bench, "brain_score"):
            if not against:
                continue
            row = robustness_row(frame.reset_index(drop=True), against, modality, "convergence", fams,
                                 n_resamples, seed)
            row.update(metric=metric, against=against, kernel_size=np.nan)
            rows.append(row)
    cols = ["modality", "metric", "against"] + [c for c in ROBUSTNESS_COLUMNS if c not in ("modality",)]
    out = pd.DataFrame(rows)
    for c in cols:
        if c not in out.columns:
            out[c] = np.nan
    return out[cols]
