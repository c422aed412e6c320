"""Brain score vs model performance statistics: the paper's headline correlation table.

The paper (its ``statistic/`` table, reference ``correlation_36.csv``) reports, per model
category and benchmark, the number of models, Pearson r with a Fisher-z 95% CI, the two-sided
p-value, a Benjamini-Hochberg FDR-adjusted p-value, and the same for Spearman's rho. Its
conventions, worked out from the published table and reproduced here:

* **Missing values**: a model lacking a benchmark value is dropped for that benchmark only
  (language ``elo``: n = 26 of 36).
* **Pearson CI**: Fisher z, ``tanh(atanh(r) -/+ 1.96 / sqrt(n - 3))``.
* **Spearman CI**: a *linear*, unclipped interval ``rho -/+ 1.96 * 0.6325 / sqrt(n - 1)``
  (the approximate standard error of Spearman's rho, 0.6325 = sqrt(0.4)), so its width depends
  on n only and an upper bound can exceed 1 (``[0.67, 1.09]`` for rho = 0.88, n = 36).
  ``rho -/+ 1.96 sqrt((1 - rho^2) / (n - 2))`` does NOT reproduce the table.
* **p-values**: scipy's ``pearsonr`` / ``spearmanr`` (t-distribution, two-sided).
* **FDR**: one Benjamini-Hochberg family holding *all* p-values of the table, Pearson and
  Spearman together, across all rows and categories (22 rows x 2 = 44 tests, including the
  "Average" and "Combined" rows). Neither per-category nor per-statistic families reproduce it.
* **Rows**: per category the benchmarks in :data:`LANGUAGE_TABLE_METRICS` /
  :data:`VISION_TABLE_METRICS` order, including ``score`` (the brain score against itself,
  r = 1, a sanity row), then "Vision Models (Average)" = the plain column mean of the ten
  vision rows (n, r, CI bounds, p, rho, CI bounds, p; NaNs propagate), then
  "Combined (Standardized)" (see :func:`combined_row`).
* **Strings**: r, rho and CI bounds with 2 decimals (``"[0.59, 0.88]"``), p-values as
  ``"<"`` + ``f"{p:.1e}"`` (ordinary rounding of the mantissa: 7.521e-13 -> ``"<7.5e-13"``),
  ``Model Count`` as a float (``36.0``), ``kernel_size`` the sigma of the score column.

Known differences from the published table (documented, see ``tests/test_stats.py``): the
vision ``score`` row's Pearson CI is ``[nan, nan]`` in the paper (a floating-point r of 1 + eps
there) and hence also the Average row's; here r is clipped to 1 and the CI is ``[1.00, 1.00]``.
The paper does not define its "Combined (Standardized)" row; :func:`combined_row` is a
documented stand-in that does not reproduce its r = 0.53.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

#: z quantile used by the paper for 95% intervals.
Z95 = 1.96
#: Approximate standard error of Spearman's rho times sqrt(n - 1) (sqrt(0.4)).
SPEARMAN_SE_FACTOR = 0.6325

LANGUAGE_CATEGORY = "Language Models"
VISION_CATEGORY = "Vision Models"
AVERAGE_CATEGORY = "Vision Models (Average)"
COMBINED_CATEGORY = "Combined (Standardized)"

#: Benchmark rows of the paper's table, in its order. ``score`` = the brain score itself.
LANGUAGE_TABLE_METRICS = [
    "IFEval", "BBH", "MATH Lvl 5", "GPQA", "MUSR", "MMLU-PRO", "Average ⬆️", "#Params (B)", "score", "elo",
]
VISION_TABLE_METRICS = [
    "imagenet", "imagenet-a", "imagenet-r", "imagenet-a-clean", "imagenet-r-clean", "imagenet-real",
    "imagenetv2-matched-frequency", "sketch", "#Params (M)", "score",
]
#: Headline benchmark per category (language: Open LLM Leaderboard v2 average; vision: ImageNet top-1).
HEADLINE = {LANGUAGE_CATEGORY: "Average ⬆️", VISION_CATEGORY: "imagenet"}

#: Columns of the numeric table returned by :func:`correlation_table`.
NUMERIC_COLUMNS = [
    "category", "metric", "n",
    "pearson_r", "pearson_ci_low", "pearson_ci_high", "pearson_p", "pearson_p_fdr",
    "spearman_rho", "spearman_ci_low", "spearman_ci_high", "spearman_p", "spearman_p_fdr",
    "kernel_size",
]
#: Columns of the paper's formatted table (``correlation_36.csv``).
PAPER_COLUMNS = [
    "Model Category", "Metric", "Model Count", "Pearson r", "95% CI", "p-value", "FDR p-value",
    "Spearman ρ", "Spearman 95% CI", "Spearman p-value", "Spearman FDR p-value", "kernel_size",
]
_STAT_COLUMNS = [c for c in NUMERIC_COLUMNS if c not in ("category", "metric", "kernel_size")]


# --------------------------------------------------------------------------- primitives

def fisher_ci(r: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Fisher-z confidence interval of a Pearson r: ``tanh(atanh(r) -/+ z / sqrt(n - 3))``.

    NaN bounds when ``n <= 3`` or r is NaN; ``r = +-1`` gives the degenerate ``(r, r)``.
    """
    if n <= 3 or not np.isfinite(r):
        return (math.nan, math.nan)
    r = min(max(float(r), -1.0), 1.0)
    with np.errstate(divide="ignore"):
        zr = np.arctanh(r)
    half = z / math.sqrt(n - 3)
    return (float(np.tanh(zr - half)), float(np.tanh(zr + half)))


def spearman_ci(rho: float, n: int, z: float = Z95, se_factor: float = SPEARMAN_SE_FACTOR) -> tuple[float, float]:
    """The paper's Spearman interval: ``rho -/+ z * 0.6325 / sqrt(n - 1)``, linear and unclipped.

    NaN bounds when ``n <= 1`` or rho is NaN. Bounds may leave [-1, 1] (as in the paper).
    """
    if n <= 1 or not np.isfinite(rho):
        return (math.nan, math.nan)
    half = z * se_factor / math.sqrt(n - 1)
    return (float(rho - half), float(rho + half))


def bh_fdr(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1).

    ``q_(i) = min_{j >= i} p_(j) * m / j`` over the sorted p-values. NaNs are left out of the
    family (m counts finite values only) and stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    vals = p[ok]
    order = np.argsort(vals, kind="mergesort")
    scaled = vals[order] * m / np.arange(1, m + 1)
    adj = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def correlate(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Pearson and Spearman statistics of two paired samples (pairs with a NaN are dropped).

    Returns ``n``, ``pearson_r``, ``pearson_ci_low/high`` (Fisher z), ``pearson_p`` (two-sided),
    ``spearman_rho``, ``spearman_ci_low/high`` (:func:`spearman_ci`), ``spearman_p``.
    Statistics are NaN when fewer than 3 complete pairs remain or a side is constant.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    nan = math.nan
    r = p = rho = ps = nan
    if n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        if np.array_equal(x, y):
            # a sample against itself (the table's ``score`` row): exactly 1 and p = 0, whatever
            # the float rounding of the sums (which depends on the row order) would give
            r, p, rho, ps = 1.0, 0.0, 1.0, 0.0
        else:
            from scipy import stats as sps  # here, not at import: ~0.7 s of every figure and statistics job

            r, p = (float(v) for v in sps.pearsonr(x, y))
            rho, ps = (float(v) for v in sps.spearmanr(x, y))
    plo, phi = fisher_ci(r, n)
    slo, shi = spearman_ci(rho, n)
    return {
        "n": float(n), "pearson_r": r, "pearson_ci_low": plo, "pearson_ci_high": phi, "pearson_p": p,
        "spearman_rho": rho, "spearman_ci_low": slo, "spearman_ci_high": shi, "spearman_p": ps,
    }


def kernel_size_of(score_col: str) -> int | float:
    """The sigma in a ``cka_{sigma}`` column name (NaN for other score columns)."""
    m = re.fullmatch(r"cka_(\d+)", score_col)
    return int(m.group(1)) if m else math.nan


# --------------------------------------------------------------------------- tables

def add_fdr(table: pd.DataFrame) -> pd.DataFrame:
    """Recompute ``pearson_p_fdr`` and ``spearman_p_fdr`` as ONE BH family over all p-values.

    The family is every row's Pearson p and Spearman p together (the paper's convention:
    44 tests for its 22-row table). Returns a copy.
    """
    out = table.copy()
    k = len(out)
    q = bh_fdr(np.r_[out["pearson_p"].to_numpy(float), out["spearman_p"].to_numpy(float)])
    out["pearson_p_fdr"] = q[:k]
    out["spearman_p_fdr"] = q[k:]
    return out


def correlation_table(
    scores: pd.DataFrame,
    benchmarks: list[str],
    category: str,
    score_col: str = "cka_36",
) -> pd.DataFrame:
    """Brain score vs each benchmark: one row per benchmark, in the given order.

    ``scores`` has one row per model with the brain score column ``score_col`` and the benchmark
    columns; the benchmark name ``"score"`` means ``score_col`` itself (the paper's sanity row).
    Per benchmark only models with both values count (``n``). FDR columns are BH-adjusted over
    all p-values of this table, Pearson and Spearman together (:func:`add_fdr`); for the
    paper's full table, where the family spans all categories, use :func:`paper_table`.
    Columns: :data:`NUMERIC_COLUMNS`.
    """
    rows = []
    x = scores[score_col].to_numpy(float)
    for bench in benchmarks:
        col = score_col if bench == "score" else bench
        if col not in scores.columns:
            raise KeyError(f"benchmark column {col!r} not in scores")
        rows.append({"category": category, "metric": bench, **correlate(x, scores[col].to_numpy(float))})
    table = pd.DataFrame(rows)
    table["pearson_p_fdr"] = math.nan
    table["spearman_p_fdr"] = math.nan
    table["kernel_size"] = kernel_size_of(score_col)
    return add_fdr(table[NUMERIC_COLUMNS])


def average_row(table: pd.DataFrame, category: str = AVERAGE_CATEGORY, metric: str = "Average") -> pd.DataFrame:
    """The paper's "(Average)" row: the plain column mean of ``table``'s statistics (NaN propagates)."""
    row = {"category": category, "metric": metric}
    for col in _STAT_COLUMNS:
        row[col] = float(table[col].to_numpy(float).mean())
    row["kernel_size"] = table["kernel_size"].iloc[0]
    return pd.DataFrame([row])[NUMERIC_COLUMNS]


def _zscore(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return (v - v.mean()) / v.std()


def combined_row(
    parts: Sequence[tuple[pd.DataFrame, str]],
    score_col: str = "cka_36",
    category: str = COMBINED_CATEGORY,
    metric: str = "Combined",
) -> pd.DataFrame:
    """Pooled correlation over categories after z-scoring within each one.

    ``parts`` is a list of ``(scores, benchmark)``; in each part the models lacking the value are
    dropped, brain score and benchmark are z-scored (ddof 0) within the part, then all parts are
    pooled and correlated. The paper's "Combined (Standardized)" row (n = 630) is not defined in
    its text; this stand-in with the headline benchmarks gives r = 0.55 where the paper has 0.53.
    """
    xs, ys = [], []
    for scores, bench in parts:
        d = scores[[score_col, bench]].dropna()
        xs.append(_zscore(d[score_col].to_numpy()))
        ys.append(_zscore(d[bench].to_numpy()))
    row = {"category": category, "metric": metric, **correlate(np.concatenate(xs), np.concatenate(ys))}
    row["pearson_p_fdr"] = row["spearman_p_fdr"] = math.nan
    row["kernel_size"] = kernel_size_of(score_col)
    return pd.DataFrame([row])[NUMERIC_COLUMNS]


def paper_table(
    language: pd.DataFrame,
    vision: pd.DataFrame,
    score_col: str = "cka_36",
    combined: bool = True,
) -> pd.DataFrame:
    """The paper's full headline table (numeric): language rows, vision rows, vision average, combined.

    ``language`` / ``vision``: per-model tables such as :func:`load_paper_scores` returns. FDR is
    one BH family over all Pearson and Spearman p-values of the whole table (:func:`add_fdr`).
    """
    lang = correlation_table(language, LANGUAGE_TABLE_METRICS, LANGUAGE_CATEGORY, score_col)
    vis = correlation_table(vision, VISION_TABLE_METRICS, VISION_CATEGORY, score_col)
    parts = [lang, vis, average_row(vis)]
    if combined:
        parts.append(combined_row(
            [(language, HEADLINE[LANGUAGE_CATEGORY]), (vision, HEADLINE[VISION_CATEGORY])], score_col))
    return add_fdr(pd.concat(parts, ignore_index=True))


# --------------------------------------------------------------------------- formatting

def format_p(p: float) -> str:
    """The paper's p-value string: ``"<"`` + one-decimal scientific mantissa (``"<3.5e-08"``, ``"<0.0e+00"``);
    ``"nan"`` when undefined (fewer than 3 models with the benchmark)."""
    return f"<{p:.1e}" if math.isfinite(p) else "nan"


def format_ci(lo: float, hi: float) -> str:
    """``"[0.59, 0.88]"`` (2 decimals; ``"[nan, nan]"`` when undefined)."""
    return f"[{lo:.2f}, {hi:.2f}]"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout and strings (columns :data:`PAPER_COLUMNS`, as in ``correlation_36.csv``).

    ``format_table(paper_table(...)).to_csv(path)`` writes a file laid out like the paper's.
    """
    out = pd.DataFrame({
        "Model Category": table["category"].to_numpy(),
        "Metric": table["metric"].to_numpy(),
        "Model Count": table["n"].astype(float).to_numpy(),
        "Pearson r": [f"{v:.2f}" for v in table["pearson_r"]],
        "95% CI": [format_ci(a, b) for a, b in zip(table["pearson_ci_low"], table["pearson_ci_high"], strict=True)],
        "p-value": [format_p(v) for v in table["pearson_p"]],
        "FDR p-value": [format_p(v) for v in table["pearson_p_fdr"]],
        "Spearman ρ": [f"{v:.2f}" for v in table["spearman_rho"]],
        "Spearman 95% CI": [format_ci(a, b) for a, b in zip(table["spearman_ci_low"], table["spearman_ci_high"],
                                                                    strict=True)],
        "Spearman p-value": [format_p(v) for v in table["spearman_p"]],
        "Spearman FDR p-value": [format_p(v) for v in table["spearman_p_fdr"]],
        "kernel_size": table["kernel_size"].to_numpy(),
    })
    return out[PAPER_COLUMNS]


def parse_ci(text: str) -> tuple[float, float]:
    """Inverse of :func:`format_ci`: ``"[0.59, 0.88]"`` -> ``(0.59, 0.88)``."""
    lo, hi = text.strip().strip("[]").split(",")
    return (float(lo), float(hi))


def parse_p(text: str) -> float:
    """Inverse of :func:`format_p`: ``"<3.5e-08"`` -> ``3.5e-08``."""
    return float(text.strip().lstrip("<"))


# --------------------------------------------------------------------------- shipped data

def _resource(name: str):
    return resources.files("brainalign") / "resources" / name


@lru_cache
def _load_paper_scores(modality: str) -> pd.DataFrame:
    if modality not in ("language", "vision"):
        raise ValueError(f"modality must be 'language' or 'vision', not {modality!r}")
    with _resource(f"paper_{modality}_scores.csv").open("rb") as fh:
        return pd.read_csv(fh)


def load_paper_scores(modality: str) -> pd.DataFrame:
    """The paper's per-model scores shipped with the package (``paper_{modality}_scores.csv``).

    One row per model: ``model`` (vision also ``arch``), ``cka_20`` .. ``cka_100`` and the
    benchmark columns. Made by ``tools/make_paper_resources.py``. Returns a copy.
    """
    return _load_paper_scores(modality).copy()


def load_paper_target(name: str = "correlation_36.csv") -> pd.DataFrame:
    """A paper result table kept as a test target (``resources/paper_tables/{name}``), as strings."""
    with _resource(f"paper_tables/{name}").open("rb") as fh:
        return pd.read_csv(fh, index_col=0, dtype=str, keep_default_na=False)
