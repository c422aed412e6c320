"""From measurements to one brain score per model, and the statistics behind the figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

POOLINGS = {
    "max_roi_mean_layer": "max over ROIs per (model, subject, layer), then mean over layers and subjects",
    "max_roi_max_layer": "max over ROIs per (model, subject, layer), max over layers, mean over subjects",
    "mean_roi_mean_layer": "mean over ROIs, layers and subjects",
}


def brain_scores(table: pd.DataFrame, metric: str = "cka_36", pooling: str = "max_roi_mean_layer") -> pd.DataFrame:
    """One score per model: columns ``src_model``, ``brain_score``, ``n_subjects``.

    ``table`` has the paper's columns (``src_model, tgt_model, metric, src_feature,
    tgt_feature, score``). ``pooling`` is a key of :data:`POOLINGS`.
    """
    per_subject = subject_scores(table, metric, pooling).stack()  # NaN (missing subject) dropped
    out = per_subject.groupby(level=0).agg(["mean", "count"])
    return out.rename(columns={"mean": "brain_score", "count": "n_subjects"}).reset_index()

def _pool_subject(df: pd.DataFrame, pooling: str) -> pd.Series:
    """Per (model, subject) score of one metric's rows, pooled over ROIs then layers."""
    keys = ["src_model", "tgt_model", "src_feature"]
    roi = df.groupby(keys)["score"].agg("mean" if pooling.startswith("mean_roi") else "max")
    return roi.groupby(level=[0, 1]).agg("max" if pooling == "max_roi_max_layer" else "mean")


def subject_scores(table: pd.DataFrame, metric: str = "cka_36", pooling: str = "max_roi_mean_layer") -> pd.DataFrame:
    """Brain score per model (rows) and subject (columns), pooled within each subject as ``pooling`` says."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; one of {list(POOLINGS)}")
    df = table[table["metric"] == metric]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r} in the table")
    return _pool_subject(df, pooling).unstack("tgt_model")


def subject_consistency(table: pd.DataFrame, metric: str = "cka_36",
                        pooling: str = "max_roi_mean_layer") -> pd.DataFrame:
    """Between-subject consistency (figure family 3): Pearson r between subjects of the per-model
    brain scores (subjects x subjects; the paper's ``{lang,vision}_corr.csv``)."""
    return consistency_matrix(subject_scores(table, metric, pooling))


def consistency_matrix(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Pearson r between the columns (subjects) of a models x subjects score table."""
    corr = per_subject.corr(method="pearson", min_periods=3)
    corr.index.name = None
    corr.columns.name = None
    return corr


def metric_correlation(table: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Spearman correlation between metric variants over every measurement (figure family 4).

    A measurement is one (model, subject, layer, ROI); for each pair of variants, the measurements
    both have are ranked (average ranks for ties) and the Pearson correlation of the ranks is
    Spearman's rho (pandas' pairwise-complete Spearman). Metrics in ``metrics`` order (default: the
    registry's order of those present).
    """
    from brainalign.alignment.metrics import METRICS

    present = set(table["metric"].unique())
    order = [m for m in (metrics or list(METRICS)) if m in present]
    wide = table.pivot_table(index=["src_model", "tgt_model", "src_feature", "tgt_feature"], columns="metric",
                             values="score", aggfunc="first", observed=True)[order]
    corr = wide.corr(method="spearman", min_periods=3)
    corr.index.name = None
    corr.columns.name = None
    return corr


def layer_profiles(table: pd.DataFrame, metric: str = "cka_36") -> pd.DataFrame:
    """Score against relative depth (figure family 5): mean of ``metric`` per (subject, Yeo-7 network,
    relative depth in eighths) over models, layers of that eighth and the network's ROIs.
    Columns ``tgt_model, yeo7, relative_src_feature, score, n``."""
    df = table[table["metric"] == metric]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r} in the table")
    out = (df.groupby(["tgt_model", "yeo7", "relative_src_feature"], observed=True)["score"]
           .agg(["mean", "count"]).rename(columns={"mean": "score", "count": "n"}).reset_index())
    return out


#: How per-ROI scores are pooled over models and layers (figure families 6, 7).
ROI_POOLING = "max over layers per (model, subject, ROI), then mean over models"


def roi_scores(table: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Per-ROI score per subject and metric, the paper's ``brain_regions`` table format.

    ``score`` pools as :data:`ROI_POOLING`; ``normalized_score`` z-scores ``score`` across the
    ROIs of each (metric, subject) (population SD), so metrics and kernel sizes with different
    scales compare. Columns ``metric, tgt_feature, yeo7, tgt_model, score, normalized_score``.
    """
    df = table if metrics is None else table[table["metric"].isin(metrics)]
    if df.empty:
        raise ValueError(f"no rows for metrics {metrics} in the table")
    layer_max = df.groupby(["metric", "tgt_feature", "tgt_model", "src_model"], observed=True)["score"].max()
    out = layer_max.groupby(level=[0, 1, 2]).mean().rename("score").reset_index()
    yeo = df.drop_duplicates("tgt_feature").set_index("tgt_feature")["yeo7"]
    out.insert(2, "yeo7", out["tgt_feature"].map(yeo))
    grp = out.groupby(["metric", "tgt_model"])["score"]
    sd = grp.transform(lambda s: s.std(ddof=0))
    out["normalized_score"] = (out["score"] - grp.transform("mean")) / sd.where(sd > 0)
    return out


def _sign_consistency(x: pd.DataFrame) -> pd.Series:
    """Fraction of subjects agreeing with the majority sign of the change (0.5 .. 1)."""
    pos, neg = (x > 0).mean(axis=1), (x < 0).mean(axis=1)
    return np.maximum(pos, neg)


def kernel_size_change(rois: pd.DataFrame, sigma_from: int = 28, sigma_to: int = 68) -> pd.DataFrame:
    """Per-ROI change of the score from ``cka_{sigma_from}`` to ``cka_{sigma_to}`` (figure family 6).

    ``rois`` is a :func:`roi_scores` table (or the paper's ``brain_regions`` table). Per ROI and
    subject the change ``to - from`` of the raw and the z-normalised score; then over subjects
    (the paper's ``28_68_consistency.csv`` columns): ``raw_mean, norm_mean, raw_std, norm_std``
    (sample SD), ``raw_cv, norm_cv`` (SD / |mean|), ``raw_sign_consistency,
    norm_sign_consistency`` (fraction of subjects with the majority sign), ``num_subjects``,
    and ``deviation`` = ``norm_mean`` minus its mean over ROIs.
    """
    a, b = f"cka_{sigma_from}", f"cka_{sigma_to}"
    missing = {a, b} - set(rois["metric"])
    if missing:
        raise ValueError(f"kernel-size change needs {sorted(missing)} (add them to the config's metrics)")
    wide = rois[rois["metric"].isin([a, b])].pivot_table(
        index=["tgt_feature", "tgt_model"], columns="metric", values=["score", "normalized_score"], observed=True)
    raw = (wide[("score", b)] - wide[("score", a)]).unstack("tgt_model")
    norm = (wide[("normalized_score", b)] - wide[("normalized_score", a)]).unstack("tgt_model")
    out = pd.DataFrame({
        "raw_mean": raw.mean(axis=1), "norm_mean": norm.mean(axis=1),
        "raw_std": raw.std(axis=1), "norm_std": norm.std(axis=1),
    })
    out["raw_cv"] = out["raw_std"] / out["raw_mean"].abs()
    out["norm_cv"] = out["norm_std"] / out["norm_mean"].abs()
    out["raw_sign_consistency"] = _sign_consistency(raw)
    out["norm_sign_consistency"] = _sign_consistency(norm)
    out["num_subjects"] = raw.notna().sum(axis=1)
    out["deviation"] = out["norm_mean"] - out["norm_mean"].mean()
    yeo = rois.drop_duplicates("tgt_feature").set_index("tgt_feature")["yeo7"]
    out.insert(0, "yeo7", yeo.reindex(out.index))
    out.index.name = "tgt_feature"
    return out.reset_index()


def profile_matrix(table: pd.DataFrame, metric: str = "cka_36") -> pd.DataFrame:
    """``metric`` averaged over subjects: rows (model, layer), columns ROIs (figure family 8 input)."""
    df = table[table["metric"] == metric]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r} in the table")
    keys = ["src_model", "src_feature", "relative_src_feature", "tgt_feature"]
    mean = df.groupby(keys, observed=True)["score"].mean()
    return mean.unstack("tgt_feature")


def _cache_umap_jit() -> None:
    """Keep umap-learn's numba functions compiled on disk (numba's cache, beside the package or in the user's
    cache directory) instead of compiling them in every process: ~12 s of a UMAP figure job, whatever the
    number of profiles, then ~0.1 s. The compiled code is the same, so is the embedding."""
    import sys

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if name == "umap" or name.startswith("umap."):
            for obj in list(vars(module).values()):
                if isinstance(obj, CPUDispatcher) and isinstance(obj._cache, NullCache):
                    obj.enable_caching()


def umap_embedding(profiles: pd.DataFrame, n_neighbors: int = 50, min_dist: float = 1.0,
                   seed: int = 0) -> pd.DataFrame:
    """2-D UMAP (cosine) of the rows of ``profiles`` (the paper: n_neighbors 50, min_dist 1).

    ``n_neighbors`` is capped at rows - 1 (UMAP needs fewer neighbours than points); with fewer
    than 4 rows there is nothing to embed and a ValueError says so.
    """
    import umap

    _cache_umap_jit()
    x = profiles.to_numpy(dtype=np.float64)
    if len(x) < 4:
        raise ValueError(f"UMAP needs at least 4 profiles, got {len(x)}")
    k = min(n_neighbors, len(x) - 1)
    init = "spectral" if len(x) > k + 1 else "random"
    reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, metric="cosine", random_state=seed, init=init,
                        n_jobs=1)
    xy = reducer.fit_transform(x)
    out = profiles.index.to_frame(index=False)
    out["umap_1"], out["umap_2"] = xy[:, 0], xy[:, 1]
    out["n_neighbors"] = k
    return out


def trajectory(table: pd.DataFrame, checkpoints: pd.DataFrame, metric: str = "cka_36") -> pd.DataFrame:
    """Brain score along training runs (figure family 9).

    ``checkpoints``: one row per checkpoint model with ``src_model``, ``run``, ``step`` (epoch or
    training step), ``tokens`` (or NaN) and ``performance`` (or NaN). Per checkpoint the brain score
    is the max over ROIs per (subject, layer), then the mean over subjects and layers, with a
    t-based 95% CI over those (subject, layer) values. Rows sorted by run and step.
    """
    from scipy import stats as sps

    df = table[(table["metric"] == metric) & table["src_model"].isin(checkpoints["src_model"])]
    if df.empty:
        raise ValueError(f"no {metric} rows for the checkpoint models {list(checkpoints['src_model'])[:3]} ...")
    per = df.groupby(["src_model", "tgt_model", "src_feature"], observed=True)["score"].max()
    agg = per.groupby(level=0).agg(["mean", "std", "count"])
    half = sps.t.ppf(0.975, np.maximum(agg["count"] - 1, 1)) * agg["std"] / np.sqrt(agg["count"])
    out = checkpoints.set_index("src_model").join(pd.DataFrame({
        "brain_score": agg["mean"], "ci_low": agg["mean"] - half, "ci_high": agg["mean"] + half,
        "n_values": agg["count"]}), how="inner")
    return out.reset_index().sort_values(["run", "step"]).reset_index(drop=True)
