"""How much to trust "brain score tracks task performance": intervals and tests beside the paper's.

The paper's headline table (:func:`brainalign.analysis.stats.paper_table`) treats models as independent
draws and gives a Spearman interval that can leave [-1, 1]. :func:`robustness_table` keeps those
numbers and adds, per benchmark:

- the Spearman interval by Fisher z with the Bonett-Wright standard error
  ``sqrt((1 + rho^2 / 2) / (n - 3))`` (always inside [-1, 1]);
- a percentile bootstrap interval of Pearson r over models (seeded resamples);
- family-level analyses: models of one architecture family (the registry's ``family``; by
  default a model's architecture) are not independent, so a **cluster bootstrap** resamples
  families with all their models, and the correlation of **family means** is reported with its
  Fisher interval on the number of families;
- a permutation p-value (benchmark shuffled over models; two-sided, ``(1 + hits) / (1 + B)``);
- **partial correlations** of brain score and benchmark controlling for log(parameters) and,
  where the scores hold it, for the number of layers (both residualised on the covariate with
  an intercept; p from the t distribution with ``n - 3`` degrees of freedom).

Every function drops models lacking a value and reports the ``n`` it used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from brainalign.analysis.stats import Z95, fisher_ci, spearman_ci

N_RESAMPLES = 10_000
SEED = 0
PARAMS_COLUMNS = ("#Params (M)", "#Params (B)")  # vision, language model scores
LAYERS_COLUMN = "n_layers"
MIN_GROUPS = 5  # families needed for the cluster bootstrap


def bonett_wright_ci(rho: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Spearman interval: ``tanh(atanh(rho) -/+ z * sqrt((1 + rho^2 / 2) / (n - 3)))`` (Bonett &
    Wright 2000). Inside [-1, 1] by construction; NaN when ``n <= 3`` or rho is NaN."""
    if n <= 3 or not np.isfinite(rho):
        return (math.nan, math.nan)
    rho = min(max(float(rho), -1.0), 1.0)
    if abs(rho) == 1.0:
        return (rho, rho)
    half = z * math.sqrt((1.0 + rho**2 / 2.0) / (n - 3))
    zr = math.atanh(rho)
    return (math.tanh(zr - half), math.tanh(zr + half))


def weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of ``x`` and ``y`` (n,) under each row of weights ``w`` (B, n): with integer
    weights, the r of the sample that repeats each pair ``w`` times. NaN where a row is constant."""
    w = np.asarray(w, dtype=float)
    tot = w.sum(1)
    mx, my = (w @ x) / tot, (w @ y) / tot
    sxy = (w @ (x * y)) / tot - mx * my
    sxx = (w @ (x * x)) / tot - mx * mx
    syy = (w @ (y * y)) / tot - my * my
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sxy / np.sqrt(sxx * syy)
    return np.clip(r, -1.0, 1.0)


def _percentile(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return (math.nan, math.nan)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(v, [a, 1.0 - a])
    return (float(lo), float(hi))


def bootstrap_ci(x: np.ndarray, y: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                 chunk: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of Pearson r, resampling models (pairs) with replacement."""
    rng = np.random.default_rng(seed)
    n = x.size
    rs = []
    for start in range(0, n_resamples, chunk):  # (chunk, n) weights at a time: bounded memory
        b = min(chunk, n_resamples - start)
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(b)])
        rs.append(weighted_pearson(x, y, w))
    return _percentile(np.concatenate(rs))


def cluster_bootstrap_ci(x: np.ndarray, y: np.ndarray, groups: Sequence, n_resamples: int = N_RESAMPLES,
                         seed: int = SEED, chunk: int = 1000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of Pearson r resampling whole groups (families) with
    replacement, each drawn group bringing all its models; NaN with fewer than 5 groups."""
    codes, _ = pd.factorize(pd.Series(list(groups)))
    n_groups = int(codes.max()) + 1 if codes.size else 0
    if n_groups < MIN_GROUPS:  # a percentile interval over fewer families means nothing
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    rs = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=b)  # (b, groups)
        rs.append(weighted_pearson(x, y, counts[:, codes]))
    return _percentile(np.concatenate(rs))


def permutation_p(x: np.ndarray, y: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED,
                  chunk: int = 1000) -> float:
    """Two-sided permutation p of Pearson r: ``(1 + #{|r_perm| >= |r|}) / (1 + B)``."""
    n = x.size
    if n < 3:
        return math.nan
    r = float(np.corrcoef(x, y)[0, 1])
    xs = (x - x.mean()) / x.std()
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        perm = rng.permuted(np.broadcast_to(y, (b, n)), axis=1)
        ps = (perm - perm.mean(1, keepdims=True)) / perm.std(1, keepdims=True)
        hits += int((np.abs(ps @ xs / n) >= abs(r) - 1e-12).sum())
    return (1 + hits) / (1 + n_resamples)


def partial_correlation(x: np.ndarray, y: np.ndarray, covariates: np.ndarray) -> tuple[float, float]:
    """Pearson r of ``x`` and ``y`` after regressing each on ``covariates`` (n, k) with an
    intercept; two-sided p from t with ``n - 2 - k`` degrees of freedom. NaN if too few models."""
    cov = np.asarray(covariates, dtype=float).reshape(x.size, -1)
    n, k = cov.shape
    if n - 2 - k < 1:
        return (math.nan, math.nan)
    design = np.column_stack([np.ones(n), cov])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    if rx.std() == 0 or ry.std() == 0:
        return (math.nan, math.nan)
    r = float(np.clip(np.corrcoef(rx, ry)[0, 1], -1.0, 1.0))
    df = n - 2 - k
    t = r * math.sqrt(df / max(1e-300, 1.0 - r * r))
    return (r, float(2 * sps.t.sf(abs(t), df)))


def family_means(x: np.ndarray, y: np.ndarray, groups: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Per-family mean brain score and benchmark (families in order of first appearance)."""
    df = pd.DataFrame({"x": x, "y": y, "g": list(groups)})
    means = df.groupby("g", sort=False)[["x", "y"]].mean()
    return means["x"].to_numpy(), means["y"].to_numpy()


ROBUSTNESS_COLUMNS = [
    "modality", "benchmark", "kernel_size", "n_models", "n_families",
    "pearson_r", "paper_pearson_ci_low", "paper_pearson_ci_high",
    "spearman_rho", "paper_spearman_ci_low", "paper_spearman_ci_high",
    "spearman_bw_ci_low", "spearman_bw_ci_high",
    "bootstrap_ci_low", "bootstrap_ci_high",
    "cluster_bootstrap_ci_low", "cluster_bootstrap_ci_high",
    "family_mean_r", "family_mean_ci_low", "family_mean_ci_high",
    "permutation_p",
    "r_score_log_params", "r_benchmark_log_params",
    "partial_r_log_params", "partial_p_log_params", "n_partial_log_params",
    "partial_r_layers", "partial_p_layers", "n_partial_layers",
]


def params_column(scores: pd.DataFrame) -> str | None:
    """The parameter-count column of a model-scores table, if any."""
    return next((c for c in PARAMS_COLUMNS if c in scores.columns), None)


def robustness_row(scores: pd.DataFrame, benchmark: str, modality: str, score_col: str, families: Sequence,
                   n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """Every statistic of :data:`ROBUSTNESS_COLUMNS` for one benchmark (models with both values)."""
    from brainalign.analysis.stats import kernel_size_of

    fam = pd.Series(list(families), index=scores.index)
    keep = scores[score_col].notna() & scores[benchmark].notna()
    d = scores[keep]
    x, y, g = d[score_col].to_numpy(float), d[benchmark].to_numpy(float), fam[keep].tolist()
    n = x.size
    row = {c: math.nan for c in ROBUSTNESS_COLUMNS}
    row.update(modality=modality, benchmark=benchmark, kernel_size=kernel_size_of(score_col), n_models=n,
               n_families=len(set(g)))
    if n < 4:
        return row
    r = float(np.corrcoef(x, y)[0, 1])
    rho = float(sps.spearmanr(x, y).statistic)
    row.update(pearson_r=r, spearman_rho=rho)
    row["paper_pearson_ci_low"], row["paper_pearson_ci_high"] = fisher_ci(r, n)
    row["paper_spearman_ci_low"], row["paper_spearman_ci_high"] = spearman_ci(rho, n)
    row["spearman_bw_ci_low"], row["spearman_bw_ci_high"] = bonett_wright_ci(rho, n)
    row["bootstrap_ci_low"], row["bootstrap_ci_high"] = bootstrap_ci(x, y, n_resamples, seed)
    row["cluster_bootstrap_ci_low"], row["cluster_bootstrap_ci_high"] = cluster_bootstrap_ci(
        x, y, g, n_resamples, seed)
    fx, fy = family_means(x, y, g)
    if fx.size >= 4 and fx.std() > 0 and fy.std() > 0:
        row["family_mean_r"] = float(np.corrcoef(fx, fy)[0, 1])
        row["family_mean_ci_low"], row["family_mean_ci_high"] = fisher_ci(row["family_mean_r"], fx.size)
    row["permutation_p"] = permutation_p(x, y, n_resamples, seed)

    pcol = params_column(d)
    if pcol is not None:
        ok = d[pcol].to_numpy(float) > 0
        if ok.sum() >= 5:
            logp = np.log(d[pcol].to_numpy(float)[ok])
            row["r_score_log_params"] = float(np.corrcoef(x[ok], logp)[0, 1])
            row["r_benchmark_log_params"] = float(np.corrcoef(y[ok], logp)[0, 1])
            row["partial_r_log_params"], row["partial_p_log_params"] = partial_correlation(x[ok], y[ok], logp)
            row["n_partial_log_params"] = int(ok.sum())
    if LAYERS_COLUMN in d.columns:
        ok = d[LAYERS_COLUMN].notna().to_numpy()
        if ok.sum() >= 5 and d[LAYERS_COLUMN][ok].nunique() > 1:
            layers = d[LAYERS_COLUMN].to_numpy(float)[ok]
            row["partial_r_layers"], row["partial_p_layers"] = partial_correlation(x[ok], y[ok], layers)
            row["n_partial_layers"] = int(ok.sum())
    return row


def robustness_table(parts: Sequence[tuple[str, pd.DataFrame, Sequence[str], Sequence]], score_col: str,
                     n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """One row per (modality, benchmark): ``parts`` = ``[(modality, scores, benchmarks, families)]``,
    ``families`` aligned with ``scores``' rows. Benchmarks absent from a table are skipped."""
    rows = []
    for modality, scores, benchmarks, families in parts:
        for bench in benchmarks:
            if bench in scores.columns and bench != score_col:
                rows.append(robustness_row(scores, bench, modality, score_col, families, n_resamples, seed))
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


def metric_family(metric: str) -> str:
    """The family of a metric variant (:data:`brainalign.alignment.metrics.METRICS`), else the name's stem."""
    from brainalign.alignment.metrics import METRICS

    spec = METRICS.get(metric)
    return spec.family if spec is not None else metric.rstrip("0123456789").rstrip("_")


def headline_by_metric(parts: Sequence[tuple[str, pd.DataFrame, str, Sequence]], metrics: Sequence[str],
                       n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Does the headline survive the choice of metric? One row per (modality, metric variant):
    :func:`robustness_row` of the model scores pooled from that metric against the modality's
    headline benchmark. ``parts`` = ``[(modality, scores, benchmark, families)]``; metrics a
    table lacks are skipped. Columns: ``metric``, ``family``, then :data:`ROBUSTNESS_COLUMNS`."""
    rows = []
    for modality, scores, benchmark, families in parts:
        if benchmark not in scores.columns:
            continue
        for metric in metrics:
            if metric in scores.columns:
                row = robustness_row(scores, benchmark, modality, metric, families, n_resamples, seed)
                rows.append({"metric": metric, "family": metric_family(metric)} | row)
    return pd.DataFrame(rows, columns=["metric", "family", *ROBUSTNESS_COLUMNS])


def model_families(models: Sequence[str], registry: dict | None) -> list[str]:
    """Family of each model: the registry's ``family``, else its architecture, else the model name
    up to its first ``.`` (timm's pretrained tag) or ``@`` (a checkpoint)."""
    out = []
    for name in models:
        entry = (registry or {}).get(name)
        family = entry.extra.get("family") if entry is not None else None
        if not family and entry is not None and entry.architecture and not entry.architecture.startswith("package:"):
            family = entry.architecture
        out.append(str(family) if family else str(name).split("@")[0].split(".")[0])
    return out
