"""Lead-lag of brain alignment and task performance along a training run.

The paper shows alignment and performance curves over training and reads them as "alignment rises
with, or ahead of, performance". This module turns the curves into numbers with uncertainty:

* **time to a fraction of the final gain**: for a curve ``y`` over checkpoints ``x`` (steps, epochs
  or tokens), the gain is ``y - y[0]``; ``t_f`` is the first ``x`` where the gain reaches ``f`` times
  the final gain, linearly interpolated between checkpoints (NaN where the run gains nothing).
  ``lead_t{f} = performance t_f - brain t_f``: positive when alignment gets there first;
* **cross-correlation of per-checkpoint changes**: ``corr(diff(brain)[t], diff(performance)[t + lag])``
  for lags -1, 0, 1 (lag 1: a change in alignment goes with the next change in performance); NaN
  with fewer than 3 pairs.

Uncertainty: the brain curve is the mean over (subject, layer) units of the per-unit brain score
(max over parcels), so each statistic gets a percentile bootstrap CI over those units, resampled
jointly across checkpoints. The performance curve is one measurement per checkpoint and is not
resampled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FRACTIONS = (0.5, 0.9)
LAGS = (-1, 0, 1)


def crossing(x: np.ndarray, y: np.ndarray, fraction: float) -> np.ndarray:
    """First ``x`` where ``y - y[..., 0]`` reaches ``fraction`` of its final value, linearly
    interpolated; ``y`` of shape (..., K) over sorted ``x`` (K,). NaN where the final gain is <= 0."""
    x = np.asarray(x, dtype=float)
    y = np.atleast_2d(np.asarray(y, dtype=float))
    gain = y - y[:, :1]
    final = gain[:, -1]
    target = fraction * final
    reached = gain >= target[:, None]
    i = np.argmax(reached, axis=1)  # the last checkpoint always reaches it when final > 0
    prev = np.maximum(i - 1, 0)
    g0, g1 = gain[np.arange(len(i)), prev], gain[np.arange(len(i)), i]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(g1 > g0, (target - g0) / (g1 - g0), 1.0)
    out = np.where(i == 0, x[0], x[prev] + np.clip(w, 0.0, 1.0) * (x[i] - x[prev]))
    out = np.where(final > 0, out, np.nan)
    return out


def lagged_correlation(a: np.ndarray, b: np.ndarray, lag: int) -> np.ndarray:
    """Pearson correlation of ``a[..., t]`` with ``b[t + lag]`` over the t where both exist; ``a``
    (..., M), ``b`` (M,). NaN with fewer than 3 pairs or a constant series."""
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.asarray(b, dtype=float)
    M = b.shape[-1]
    if lag >= 0:
        aa, bb = a[:, : M - lag], b[lag:]
    else:
        aa, bb = a[:, -lag:], b[: M + lag]
    if bb.size < 3:
        return np.full(len(a), np.nan)
    ac = aa - aa.mean(axis=1, keepdims=True)
    bc = bb - bb.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return (ac @ bc) / np.sqrt((ac**2).sum(axis=1) * (bc**2).sum())


def lead_lag(units: np.ndarray, x: np.ndarray, performance: np.ndarray | None, fractions=FRACTIONS, lags=LAGS,
             resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Lead-lag statistics of one run. ``units``: (U, K) brain scores of U (subject, layer) units at
    K checkpoints ordered by ``x``; ``performance``: (K,) or None. Columns ``statistic, fraction,
    lag, estimate, ci_low, ci_high`` (95% percentile bootstrap over units, ``resamples`` draws)."""
    units = np.asarray(units, dtype=float)
    U, K = units.shape
    brain = units.mean(axis=0)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(U, np.full(U, 1.0 / U), size=resamples) if U else np.zeros((0, 0))
    boot = counts @ units / U  # (B, K): the brain curve of each resample
    perf = None if performance is None else np.asarray(performance, dtype=float)
    has_perf = perf is not None and np.isfinite(perf).all()
    rows = []

    def add(statistic, estimate, draws, fraction=np.nan, lag=np.nan):
        draws = draws[np.isfinite(draws)] if draws is not None else np.array([])
        lo, hi = np.percentile(draws, [2.5, 97.5]) if len(draws) >= 0.9 * resamples and len(draws) else (np.nan,) * 2
        rows.append({"statistic": statistic, "fraction": fraction, "lag": lag, "estimate": float(estimate),
                     "ci_low": float(lo), "ci_high": float(hi)})

    for f in fractions:
        tb, tb_boot = crossing(x, brain, f)[0], crossing(x, boot, f)
        add(f"brain_t{round(100 * f)}", tb, tb_boot, fraction=f)
        if has_perf:
            tp = crossing(x, perf, f)[0]
            add(f"performance_t{round(100 * f)}", tp, None, fraction=f)
            add(f"lead_t{round(100 * f)}", tp - tb, tp - tb_boot, fraction=f)
    if has_perf:
        dp, db, dboot = np.diff(perf), np.diff(brain), np.diff(boot, axis=1)
        for lag in lags:
            add(f"xcorr_lag{lag:+d}", lagged_correlation(db, dp, lag)[0], lagged_correlation(dboot, dp, lag), lag=lag)
    out = pd.DataFrame(rows)
    out["n_checkpoints"], out["n_units"], out["n_resamples"] = K, U, resamples
    return out


def run_lead_lag(layers: pd.DataFrame, checkpoints: pd.DataFrame, metric: str, resamples: int = 10000,
                 seed: int = 0) -> pd.DataFrame:
    """:func:`lead_lag` for every run. ``layers``: per (src_model, tgt_model, src_feature) the
    ``roi_max`` brain score (:func:`brainalign.analysis.tables.layer_scores`); ``checkpoints``: ``src_model,
    run, step, tokens, performance`` per checkpoint model. Units present at every checkpoint of a
    run are used. One block of rows per run, with ``run, x_unit, metric``."""
    parts = []
    for run, ck in checkpoints.groupby("run", sort=True):
        ck = ck.sort_values("step")
        use_tokens = ck["tokens"].notna().all() if "tokens" in ck else False
        x = (ck["tokens"] if use_tokens else ck["step"]).to_numpy(float)
        mine = layers[layers["src_model"].isin(ck["src_model"])]
        wide = mine.pivot_table(index=["tgt_model", "src_feature"], columns="src_model", values="roi_max")
        wide = wide.reindex(columns=list(ck["src_model"])).dropna()
        if len(ck) < 2 or wide.empty:
            continue
        perf = ck["performance"].to_numpy(float) if "performance" in ck else None
        out = lead_lag(wide.to_numpy(), x, perf, resamples=resamples, seed=seed)
        out.insert(0, "run", run)
        label = str(ck["x_label"].iloc[0]) if "x_label" in ck else "training step"
        out.insert(1, "x_unit", "training tokens" if use_tokens else label)
        parts.append(out)
    if not parts:
        raise ValueError("no training run has two checkpoints with brain scores")
    out = pd.concat(parts, ignore_index=True)
    out["metric"] = metric
    return out
