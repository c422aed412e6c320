"""Measurement tables at the paper's size: checked, read and aggregated out of core.

A table (``{vision,language}_all.parquet``: one row per model x subject x layer x ROI x metric,
~2 x 10^8 rows at the paper's size) is never loaded whole. Every reader here runs one DuckDB
query over the parquet file that reads only the columns it needs and returns a small aggregate
(per (metric, model, subject, layer), per ROI, per depth bin ...); DuckDB keeps to a memory limit
and spills to disk beyond it. The one statistic that needs every measurement side by side, the
Spearman correlation between metric variants, streams the rows out of DuckDB in batches and
scatters them into a dense float32 (measurements x metrics) matrix.

The pandas functions of :mod:`brainalign.analysis.reference` define the numbers (small tables, obvious
code); ``tests/test_tables.py`` checks that these readers return the same.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from brainalign.io import InputError, atomic_path

log = logging.getLogger("brainalign")

#: The measurement columns every table has (the paper's schema); then come benchmark columns.
STRING_COLUMNS = ["src_model", "tgt_model", "metric", "tgt_feature", "yeo7"]
INT_COLUMNS = ["src_feature", "relative_src_feature"]
MEASUREMENT_COLUMNS = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature", "yeo7", "score",
                       "relative_src_feature"]
KEY_COLUMNS = ["src_model", "tgt_model", "src_feature", "tgt_feature", "metric"]
#: DuckDB's memory limit per connection (the job's peak is this plus Python's arrays and ~0.3 GB).
DEFAULT_MEMORY_LIMIT = os.environ.get("BRAINALIGN_DUCKDB_MEMORY", "1GB")


def connect(memory_limit: str | None = None, threads: int | None = None, temp_dir: str | Path | None = None):
    """A DuckDB connection with a memory limit, ``threads`` worker threads (default: the job's
    ``BRAINALIGN_THREADS``, else every core) and a spill directory (default: a fresh one under
    ``$TMPDIR``, removed when the process ends)."""
    import duckdb

    threads = threads or int(os.environ.get("BRAINALIGN_THREADS", "0")) or os.cpu_count() or 1
    if temp_dir is None:
        temp_dir = tempfile.mkdtemp(prefix="brainalign-duckdb-")
        atexit.register(shutil.rmtree, temp_dir, ignore_errors=True)
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": memory_limit or DEFAULT_MEMORY_LIMIT,
                                 "preserve_insertion_order": False, "threads": int(threads),
                                 "temp_directory": Path(temp_dir).as_posix()})
    return con


def _lit(path: str | Path) -> str:
    """A parquet path as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


# --------------------------------------------------------------------------- checking a table

@dataclass
class TableInfo:
    """What :func:`check_table` found: the dimensions of a table and what it lacks."""

    path: str
    rows: int
    models: dict[str, int]  # model -> number of layers (max src_feature + 1)
    subjects: list[str]
    rois: list[str]
    metrics: list[str]
    benchmark_columns: list[str]
    extra_columns: list[str] = field(default_factory=list)
    nan_scores: int = 0
    missing_measurements: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_json(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> TableInfo:
        return cls(**json.loads(Path(path).read_text()))


def _type_ok(column: str, t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if column in STRING_COLUMNS:
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if column in INT_COLUMNS:
        return pa.types.is_integer(t)
    return pa.types.is_floating(t)  # score


def check_schema(path: str | Path) -> pa.Schema:
    """The table's schema, from the parquet footer only; one-line errors for a missing file, a
    file that is not parquet, a missing measurement column, a wrong type or no rows."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found (tables_from must hold vision_all.parquet and/or "
                         "language_all.parquet in the paper's schema)")
    try:
        meta = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputError(f"{path}: not a readable parquet file ({exc}); rewrite it with pandas.to_parquet "
                         "or pyarrow") from None
    schema = meta.schema_arrow
    for col in MEASUREMENT_COLUMNS:
        if col not in schema.names:
            raise InputError(f"{path}: column {col!r} is missing (a table needs {', '.join(MEASUREMENT_COLUMNS)})")
        t = schema.field(col).type
        if not _type_ok(col, t):
            want = "string" if col in STRING_COLUMNS else "integer" if col in INT_COLUMNS else "float"
            raise InputError(f"{path}: column {col!r} has type {t}, expected {want} (convert it before the run)")
    if meta.metadata.num_rows == 0:
        raise InputError(f"{path}: the table has no rows")
    return schema


def _dimension(con, src: str, column: str) -> list[str]:
    return [r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM {src} ORDER BY 1").fetchall()]


def table_metrics(con, path: str | Path) -> list[str]:
    """The metric names of a table (one column read; fast on dictionary-encoded columns)."""
    return _dimension(con, f"read_parquet({_lit(path)})", "metric")


def table_dimensions(con, path: str | Path) -> tuple[dict[str, int], list[str], list[str], list[str]]:
    """Models (-> layer count = max ``src_feature`` + 1), subjects, ROIs and metrics of a table."""
    from brainalign.alignment.metrics import METRICS

    src = f"read_parquet({_lit(path)})"
    rows = con.execute(f"SELECT src_model, min(src_feature), max(src_feature) FROM {src} "
                       "GROUP BY src_model ORDER BY src_model").fetchall()
    for model, lo, _ in rows:
        if lo < 0:
            raise InputError(f"{path}: column 'src_feature' of model {model!r} is negative (layer indices start at 0)")
    models = {m: int(hi) + 1 for m, _, hi in rows}
    subjects, rois = _dimension(con, src, "tgt_model"), _dimension(con, src, "tgt_feature")
    present = set(_dimension(con, src, "metric"))
    metrics = [m for m in METRICS if m in present] + sorted(present - set(METRICS))
    for col, values in (("src_model", models), ("tgt_model", subjects), ("tgt_feature", rois), ("metric", metrics)):
        if any(v is None for v in values):
            raise InputError(f"{path}: column {col!r} has null values (every row needs a {col})")
    return models, subjects, rois, metrics


def _register_dimensions(con, models: dict[str, int], subjects, rois, metrics, per_metric: bool) -> int:
    """Dimension tables for dense measurement ids; returns the number of ids.

    id = base[model] + ((subject * M' + metric) * L[model] + layer) * R + roi, with M' = the number
    of metrics when ``per_metric`` (one id per row) else 1 (one id per measurement, all metrics)."""
    m_count = len(metrics) if per_metric else 1
    names = list(models)
    layers = np.array([models[m] for m in names], dtype=np.int64)
    sizes = len(subjects) * m_count * layers * len(rois)
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    con.register("dim_model", pd.DataFrame({"name": names, "base": base, "nl": layers}))
    con.register("dim_subject", pd.DataFrame({"name": list(subjects), "idx": np.arange(len(subjects))}))
    con.register("dim_roi", pd.DataFrame({"name": list(rois), "idx": np.arange(len(rois))}))
    con.register("dim_metric", pd.DataFrame({"name": list(metrics), "idx": np.arange(len(metrics))}))
    return int(sizes.sum())


def _id_query(path, n_subjects: int, n_metrics: int, n_rois: int, per_metric: bool, where: str = "") -> str:
    sub = f"(s.idx * {n_metrics} + k.idx)" if per_metric else "s.idx"
    return (f"SELECT m.base + (({sub} * m.nl + t.src_feature) * {n_rois} + r.idx) AS id, k.idx AS k, t.score "
            f"FROM read_parquet({_lit(path)}) t "
            "JOIN dim_model m ON t.src_model = m.name JOIN dim_subject s ON t.tgt_model = s.name "
            "JOIN dim_roi r ON t.tgt_feature = r.name JOIN dim_metric k ON t.metric = k.name " + where)


def _batches(con, query: str, rows: int = 1 << 20):
    yield from con.sql(query).to_arrow_reader(rows)


def _first_duplicate(con, path) -> str:
    key = ", ".join(KEY_COLUMNS)
    row = con.execute(f"SELECT {key}, count(*) AS c FROM read_parquet({_lit(path)}) GROUP BY ALL "
                      "HAVING count(*) > 1 LIMIT 1").fetchone()
    return ", ".join(f"{k}={v!r}" for k, v in zip(KEY_COLUMNS + ["rows"], row, strict=True)) if row else "?"


def check_table(path: str | Path, con=None) -> TableInfo:
    """Check one measurement table out of core and describe it.

    Fails (one-line :class:`InputError` naming the file and column) on a missing file or column, a
    wrong type, no rows, null keys, a negative layer index, or the same (model, subject, layer, ROI,
    metric) twice; warns (in ``TableInfo.warnings``, also logged) on NaN scores (left out of every
    mean and max) and on missing measurements (a model without some layer, ROI or metric).
    One pass over the rows: each row's dense id is marked in a byte map (1 byte per possible row).
    """
    from brainalign.resources import LANGUAGE_BENCHMARK_COLUMNS, VISION_BENCHMARK_COLUMNS

    path = Path(path)
    schema = check_schema(path)
    con = con or connect()
    models, subjects, rois, metrics = table_dimensions(con, path)
    n = _register_dimensions(con, models, subjects, rois, metrics, per_metric=True)
    seen = np.zeros(n, dtype=np.uint8)
    rows = nan = 0
    for batch in _batches(con, _id_query(path, len(subjects), len(metrics), len(rois), True)):
        ids = batch.column("id").to_numpy()
        score = batch.column("score").to_numpy(zero_copy_only=False)
        seen[ids] = 1
        rows += len(ids)
        nan += int(np.count_nonzero(~np.isfinite(score)))
    total = pq.ParquetFile(path).metadata.num_rows
    if rows != total:  # a key the joins dropped: cannot happen unless a key is null
        raise InputError(f"{path}: {total - rows} rows have a null src_model, tgt_model, tgt_feature or metric")
    distinct = int(np.count_nonzero(seen))
    if distinct != rows:
        raise InputError(f"{path}: {rows - distinct} rows repeat a (model, subject, layer, ROI, metric) key, e.g. "
                         f"{_first_duplicate(con, path)} (keep one row per measurement)")
    known = set(VISION_BENCHMARK_COLUMNS + LANGUAGE_BENCHMARK_COLUMNS + ["arch"])
    rest = [c for c in schema.names if c not in MEASUREMENT_COLUMNS and not c.startswith("__index_level")]
    info = TableInfo(str(path), rows, models, subjects, rois, metrics,
                     benchmark_columns=[c for c in rest if c in known],
                     extra_columns=[c for c in rest if c not in known],
                     nan_scores=nan, missing_measurements=n - distinct)
    if nan:
        info.warnings.append(f"{path}: {nan} of {rows} scores are NaN or infinite (left out of every mean and max)")
    if n != distinct:
        info.warnings.append(f"{path}: {n - distinct} of {n} measurements are missing (each model should have every "
                             "subject x layer x ROI x metric)")
    for w in info.warnings:
        log.warning("%s", w)
    log.info("%s: %d rows, %d models, %d subjects, %d ROIs, %d metrics", path, rows, len(models), len(subjects),
             len(rois), len(metrics))
    return info


# --------------------------------------------------------------------------- aggregates

def _metric_filter(metrics: Sequence[str] | None) -> str:
    if not metrics:
        return ""
    return "WHERE metric IN (" + ", ".join(_lit(m) for m in metrics) + ")"


def _df(con, query: str) -> pd.DataFrame:
    df = con.execute(query).df()
    for c in df.columns:  # DuckDB returns dictionary columns as plain strings already
        if df[c].dtype == object:
            df[c] = df[c].astype(str)
    return df


def layer_scores(path: str | Path, metrics: Sequence[str] | None = None, con=None,
                 models: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (metric, model, subject, layer): ``roi_max`` and ``roi_mean`` of the score over ROIs
    (NaN scores left out). Columns ``metric, src_model, tgt_model, src_feature, roi_max, roi_mean``."""
    con = con or connect()
    where = _metric_filter(metrics)
    if models is not None:
        where += (" AND " if where else "WHERE ") + "src_model IN (" + ", ".join(_lit(m) for m in models) + ")"
    return _df(con, "SELECT metric, src_model, tgt_model, src_feature, "
                    "max(score) FILTER (WHERE NOT isnan(score)) AS roi_max, "
                    "avg(score) FILTER (WHERE NOT isnan(score)) AS roi_mean "
                    f"FROM read_parquet({_lit(path)}) {where} GROUP BY ALL")


def pool_layers(layers: pd.DataFrame, pooling: str) -> pd.DataFrame:
    """Per (metric, model, subject) score from :func:`layer_scores`, pooled over layers as
    ``pooling`` (a key of :data:`brainalign.analysis.reference.POOLINGS`) says. Columns ``metric,
    src_model, tgt_model, score``."""
    from brainalign.analysis.reference import POOLINGS

    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; one of {list(POOLINGS)}")
    col = "roi_mean" if pooling.startswith("mean_roi") else "roi_max"
    how = "max" if pooling == "max_roi_max_layer" else "mean"
    out = layers.groupby(["metric", "src_model", "tgt_model"], observed=True)[col].agg(how)
    return out.rename("score").reset_index()


def subject_scores(layers: pd.DataFrame, metric: str, pooling: str) -> pd.DataFrame:
    """Brain score per model (rows) and subject (columns) of one metric (as
    :func:`brainalign.analysis.reference.subject_scores`)."""
    df = layers[layers["metric"] == metric]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r} in the table")
    pooled = pool_layers(df, pooling)
    wide = pooled.pivot(index="src_model", columns="tgt_model", values="score")
    wide.columns.name, wide.index.name = "tgt_model", "src_model"
    return wide


def brain_scores(layers: pd.DataFrame, metric: str, pooling: str) -> pd.DataFrame:
    """One score per model: ``src_model, brain_score, n_subjects`` (mean over subjects)."""
    per_subject = subject_scores(layers, metric, pooling).stack()
    out = per_subject.groupby(level=0).agg(["mean", "count"])
    return out.rename(columns={"mean": "brain_score", "count": "n_subjects"}).reset_index()


def model_benchmarks(path: str | Path, columns: Sequence[str], con=None) -> pd.DataFrame:
    """One row per model with the table's own values of ``columns`` (the first non-null)."""
    con = con or connect()
    sel = ", ".join(f'first("{c}") FILTER (WHERE "{c}" IS NOT NULL) AS "{c}"' for c in columns)
    query = f"SELECT src_model{', ' + sel if sel else ''} FROM read_parquet({_lit(path)}) GROUP BY src_model"
    return con.execute(query).df().set_index("src_model")


def depth_profiles(path: str | Path, metric: str, con=None, ceilings: pd.DataFrame | None = None) -> pd.DataFrame:
    """As :func:`brainalign.analysis.reference.layer_profiles`: mean score per (subject, Yeo-7 network,
    depth eighth). Columns ``tgt_model, yeo7, relative_src_feature, score, n``. With ``ceilings``
    (columns ``tgt_model, tgt_feature, ceiling``; NaN where a parcel has none) each score is first
    divided by its (subject, parcel) ceiling; parcels without one are left out."""
    con = con or connect()
    source = f"read_parquet({_lit(path)})"
    if ceilings is not None:
        con.register("ceilings_view", ceilings[["tgt_model", "tgt_feature", "ceiling"]].assign(
            ceiling=lambda d: d["ceiling"].where(d["ceiling"] > 0)))
        source = (f"(SELECT t.tgt_model, t.tgt_feature, t.yeo7, t.relative_src_feature, t.metric, "
                  f"t.score / c.ceiling AS score FROM {source} t JOIN ceilings_view c "
                  "ON t.tgt_model = c.tgt_model AND t.tgt_feature = c.tgt_feature WHERE c.ceiling IS NOT NULL)")
    df = _df(con, "SELECT tgt_model, yeo7, relative_src_feature, avg(score) FILTER (WHERE NOT isnan(score)) AS score,"
                  " count(score) FILTER (WHERE NOT isnan(score)) AS n "
                  f"FROM {source} {_metric_filter([metric])} GROUP BY tgt_model, yeo7, relative_src_feature "
                  "ORDER BY tgt_model, yeo7, relative_src_feature")
    if ceilings is not None:
        con.unregister("ceilings_view")
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r} in the table")
    return df


def roi_scores(path: str | Path, metrics: Sequence[str], con=None) -> pd.DataFrame:
    """As :func:`brainalign.analysis.reference.roi_scores`: per (metric, ROI, subject) the mean over models of
    the max over layers, and its z-score across ROIs."""
    con = con or connect()
    df = _df(con, "WITH lm AS (SELECT metric, tgt_feature, tgt_model, src_model, "
                  "max(score) FILTER (WHERE NOT isnan(score)) AS s, first(yeo7) AS yeo7 "
                  f"FROM read_parquet({_lit(path)}) {_metric_filter(metrics)} GROUP BY ALL) "
                  "SELECT metric, tgt_feature, first(yeo7) AS yeo7, tgt_model, avg(s) AS score FROM lm "
                  "GROUP BY metric, tgt_feature, tgt_model ORDER BY metric, tgt_feature, tgt_model")
    if df.empty:
        raise ValueError(f"no rows for metrics {list(metrics)} in the table")
    grp = df.groupby(["metric", "tgt_model"])["score"]
    sd = grp.transform(lambda s: s.std(ddof=0))
    df["normalized_score"] = (df["score"] - grp.transform("mean")) / sd.where(sd > 0)
    return df


def profile_matrix(paths: Sequence[str | Path], metric: str, con=None) -> pd.DataFrame:
    """As :func:`brainalign.analysis.reference.profile_matrix` over several tables: ``metric`` averaged over
    subjects, rows (model, layer), columns ROIs."""
    con = con or connect()
    parts = []
    for p in paths:
        parts.append(_df(con, "SELECT src_model, src_feature, relative_src_feature, tgt_feature, "
                              "avg(score) FILTER (WHERE NOT isnan(score)) AS score "
                              f"FROM read_parquet({_lit(p)}) {_metric_filter([metric])} GROUP BY ALL"))
    df = pd.concat(parts, ignore_index=True)
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r} in the tables")
    mean = df.set_index(["src_model", "src_feature", "relative_src_feature", "tgt_feature"])["score"]
    return mean.unstack("tgt_feature").sort_index()


def roi_networks(path: str | Path, con=None) -> pd.Series:
    """ROI -> Yeo-7 network as the table says."""
    con = con or connect()
    df = _df(con, f"SELECT tgt_feature, first(yeo7) AS yeo7 FROM read_parquet({_lit(path)}) GROUP BY tgt_feature")
    return df.set_index("tgt_feature")["yeo7"]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) of the finite values of ``x``; NaN elsewhere."""
    from scipy.stats import rankdata

    out = np.full(x.shape, np.nan)
    ok = np.isfinite(x)
    out[ok] = rankdata(x[ok], method="average")
    return out


def metric_correlation(path: str | Path, info: TableInfo, metrics: Sequence[str] | None = None, con=None,
                       block: int = 1 << 18, exact_bytes: int = 512 << 20) -> pd.DataFrame:
    """As :func:`brainalign.analysis.reference.metric_correlation` (Spearman's rho between metric variants
    over every measurement, pairwise complete), out of core.

    The scores are ranked exactly: metrics are read in groups whose float64 scores fit
    ``exact_bytes`` (one pass over the table per group; one for the demo's tables, ~4 at the
    paper's size), each column is replaced by its centred average ranks, kept as float32 in a dense
    matrix (measurements x metrics: half-integers are exact in float32 up to 2^23 measurements),
    and the pairwise-complete Pearson correlation of the ranks comes from float64 sums over row
    blocks: for a pair (a, b) with both present, n_ab, sum x_a, sum x_b, sum x_a^2, sum x_b^2,
    sum x_a x_b. Ranking float32-rounded scores instead would tie near-equal scores that are not equal.
    Pairs with a column that has NaN scores are ranked again on their common rows (pandas' pairwise
    Spearman), one pass over the two columns per pair.
    """
    from brainalign.alignment.metrics import METRICS

    con = con or connect()
    order = [m for m in (metrics or list(METRICS)) if m in info.metrics]
    n_meas = _register_dimensions(con, info.models, info.subjects, info.rois, order, per_metric=False)
    wide = np.full((n_meas, len(order)), np.nan, dtype=np.float32)
    t0 = time.perf_counter()
    group = max(1, min(len(order), exact_bytes // max(1, 8 * n_meas)))
    for g0 in range(0, len(order), group):
        names = order[g0:g0 + group]
        con.register("dim_metric", pd.DataFrame({"name": names, "idx": np.arange(len(names))}))
        exact = np.full((n_meas, len(names)), np.nan)
        for batch in _batches(con, _id_query(path, len(info.subjects), len(names), len(info.rois), False)):
            exact[batch.column("id").to_numpy(), batch.column("k").to_numpy()] = batch.column(
                "score").to_numpy(zero_copy_only=False)
        for j in range(len(names)):
            r = _average_ranks(exact[:, j])
            wide[:, g0 + j] = r - np.nanmean(r) if np.isfinite(r).any() else r
            del r
        del exact
    log.info("metric correlation: %d measurements x %d metrics ranked in %.0f s (%d pass(es))", n_meas, len(order),
             time.perf_counter() - t0, -(-len(order) // group))
    m = len(order)
    n_ab = np.zeros((m, m))
    s_a = np.zeros((m, m))
    s_aa = np.zeros((m, m))
    s_ab = np.zeros((m, m))
    for start in range(0, n_meas, block):
        x = wide[start:start + block].astype(np.float64)
        ok = np.isfinite(x)
        x0 = np.where(ok, x, 0.0)
        w = ok.astype(np.float64)
        n_ab += w.T @ w
        s_a += x0.T @ w  # [a, b] = sum of x_a where both present
        s_aa += (x0 * x0).T @ w
        s_ab += x0.T @ x0
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = s_ab - s_a * s_a.T / n_ab
        var_a = s_aa - s_a * s_a / n_ab
        corr = cov / np.sqrt(var_a * var_a.T)
    corr[n_ab < 3] = np.nan
    # where a column has NaNs, pandas ranks each pair on its common rows: rank the global ranks again
    # there (a monotone map, so ties and order are kept exactly)
    from scipy.stats import rankdata

    gaps = [j for j in range(m) if np.isnan(wide[:, j]).any()]
    for j in gaps:
        for k in range(m):
            both = np.isfinite(wide[:, j]) & np.isfinite(wide[:, k])
            if both.sum() < 3:
                corr[j, k] = corr[k, j] = np.nan
                continue
            a, b = rankdata(wide[both, j]), rankdata(wide[both, k])
            a -= a.mean()
            b -= b.mean()
            with np.errstate(invalid="ignore", divide="ignore"):
                corr[j, k] = corr[k, j] = (a @ b) / np.sqrt((a @ a) * (b @ b))
            del both, a, b
    log.info("metric correlation: done in %.0f s", time.perf_counter() - t0)
    return pd.DataFrame(np.clip(corr, -1, 1), index=order, columns=order)


def checkpoint_info(path: str | Path, registries: Sequence[str | Path] = (), con=None) -> pd.DataFrame:
    """Checkpoint models of a ``*_trained.parquet`` table: ``src_model, run, step, tokens, x_label``.

    From the table's own ``run`` and ``step`` (or ``epoch``) columns and an optional ``tokens``
    column; else from the model registries ``registries`` (e.g. ``config/registry/*.yaml``:
    Pythia's ``step`` and ``tokens`` per ``name@revision``)."""
    con = con or connect()
    names = pq.ParquetFile(path).schema_arrow.names
    step_col = "step" if "step" in names else "epoch" if "epoch" in names else None
    if "run" in names and step_col:
        cols = ["run", step_col] + (["tokens"] if "tokens" in names else [])
        df = model_benchmarks(path, cols, con).reset_index().rename(columns={step_col: "step"})
        if "tokens" not in df:
            df["tokens"] = np.nan
        df["x_label"] = "training epoch" if step_col == "epoch" else "training step"
        return df[["src_model", "run", "step", "tokens", "x_label"]]
    from brainalign.models.registry import load_registry

    reg = {}
    for f in registries:
        reg |= load_registry(f)
    models = model_benchmarks(path, [], con).index
    rows = []
    for m in models:
        e = reg.get(m)
        if e is None or not ({"step", "epoch"} & set(e.extra)):
            raise InputError(f"{path}: checkpoint model {m!r} has no step: add columns 'run' and 'step' "
                             "(or 'epoch') to the table, or use a registry name such as "
                             "EleutherAI/pythia-70m-deduped@step1000")
        step = e.extra.get("step", e.extra.get("epoch"))
        rows.append({"src_model": m, "run": e.architecture if "step" in e.extra else e.extra.get("run"),
                     "step": int(step), "tokens": e.extra.get("tokens"),
                     "x_label": "training step" if "step" in e.extra else "training epoch"})
    return pd.DataFrame(rows)


def trajectory(path: str | Path, checkpoints: pd.DataFrame, metric: str, con=None) -> pd.DataFrame:
    """As :func:`brainalign.analysis.reference.trajectory`, from one table out of core."""

    layers = layer_scores(path, [metric], con, models=list(checkpoints["src_model"]))
    if layers.empty:
        raise ValueError(f"no {metric} rows for the checkpoint models {list(checkpoints['src_model'])[:3]} ...")
    return trajectory_from_layers(layers, checkpoints)


def trajectory_from_layers(layers: pd.DataFrame, checkpoints: pd.DataFrame) -> pd.DataFrame:
    """:func:`trajectory` from the checkpoints' :func:`layer_scores` rows of one metric."""
    from scipy import stats as sps

    agg = layers.groupby("src_model")["roi_max"].agg(["mean", "std", "count"])
    half = sps.t.ppf(0.975, np.maximum(agg["count"] - 1, 1)) * agg["std"] / np.sqrt(agg["count"])
    out = checkpoints.set_index("src_model").join(pd.DataFrame({
        "brain_score": agg["mean"], "ci_low": agg["mean"] - half, "ci_high": agg["mean"] + half,
        "n_values": agg["count"]}), how="inner")
    return out.reset_index().sort_values(["run", "step"]).reset_index(drop=True)
