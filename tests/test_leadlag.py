"""Lead-lag of alignment and performance along training (brainalign.analysis.leadlag)."""

import numpy as np
import pandas as pd
import pytest

from brainalign.analysis.leadlag import crossing, lagged_correlation, lead_lag, run_lead_lag


def slow_crossing(x, y, f):
    gain = [v - y[0] for v in y]
    if gain[-1] <= 0:
        return np.nan
    target = f * gain[-1]
    for i, g in enumerate(gain):
        if g >= target:
            if i == 0:
                return x[0]
            return x[i - 1] + (target - gain[i - 1]) / (g - gain[i - 1]) * (x[i] - x[i - 1])
    raise AssertionError


def test_crossing_interpolates_between_checkpoints_like_the_obvious_loop():
    assert crossing([0, 1, 2, 3], [0, 1, 2, 3], 0.5)[0] == pytest.approx(1.5)
    assert crossing([0, 1, 2, 3], [0, 1, 2, 3], 0.9)[0] == pytest.approx(2.7)
    assert np.isnan(crossing([0, 1, 2], [1, 0.5, 0.2], 0.5)[0])  # no gain
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.uniform(0.5, 3, 7))
    ys = rng.normal(size=(50, 7)).cumsum(axis=1)
    for f in (0.5, 0.9):
        got = crossing(x, ys, f)
        want = np.array([slow_crossing(x, y, f) for y in ys])
        np.testing.assert_allclose(got, want, equal_nan=True)


def test_lagged_correlation_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=9), rng.normal(size=9)
    assert lagged_correlation(a, b, 0)[0] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert lagged_correlation(a, b, 1)[0] == pytest.approx(np.corrcoef(a[:-1], b[1:])[0, 1])
    assert lagged_correlation(a, b, -2)[0] == pytest.approx(np.corrcoef(a[2:], b[:-2])[0, 1])
    assert np.isnan(lagged_correlation(a[:3], b[:3], 1)[0])  # 2 pairs


def test_a_planted_early_alignment_leads_performance_with_a_ci_beside_zero():
    rng = np.random.default_rng(0)
    x = np.arange(10.0)
    brain = 1 - np.exp(-x / 1.5)  # 50% of the gain at ~1.1, performance at ~4.5
    perf = 1 / (1 + np.exp(-(x - 4.5)))
    units = brain + 0.05 * rng.normal(size=(32, 10))
    out = lead_lag(units, x, perf, resamples=2000, seed=0).set_index("statistic")
    assert out.loc["lead_t50", "estimate"] > 2
    assert out.loc["lead_t50", "ci_low"] > 0
    assert out.loc["brain_t50", "ci_low"] < out.loc["brain_t50", "estimate"] < out.loc["brain_t50", "ci_high"]
    assert out.loc["performance_t50", "estimate"] == pytest.approx(slow_crossing(x, perf, 0.5))
    # the same curve for both: no lead, and the CI covers 0
    same = lead_lag(perf + 0.02 * rng.normal(size=(32, 10)), x, perf, resamples=2000, seed=0).set_index("statistic")
    assert same.loc["lead_t50", "ci_low"] <= 0 <= same.loc["lead_t50", "ci_high"]
    assert same.loc["xcorr_lag+0", "estimate"] > 0.9
    # no performance: brain rows only
    alone = lead_lag(units, x, None, resamples=200)
    assert set(alone["statistic"]) == {"brain_t50", "brain_t90"}


def test_run_lead_lag_uses_units_present_at_every_checkpoint():
    rows = []
    for step, model in enumerate(["r@1", "r@2", "r@3"]):
        for subj in ("subj01", "subj02"):
            for layer in range(3):
                if model == "r@3" and layer == 2 and subj == "subj02":
                    continue  # missing unit: dropped at every checkpoint
                rows.append({"src_model": model, "tgt_model": subj, "src_feature": layer,
                             "roi_max": step + 0.1 * layer})
    ck = pd.DataFrame({"src_model": ["r@1", "r@2", "r@3"], "run": "r", "step": [1, 2, 3], "tokens": np.nan,
                       "x_label": "training epoch", "performance": [10.0, 20.0, 60.0]})
    out = run_lead_lag(pd.DataFrame(rows), ck, "cka_36", resamples=100).set_index("statistic")
    assert (out["n_units"] == 5).all() and (out["n_checkpoints"] == 3).all()
    assert out.loc["brain_t50", "estimate"] == pytest.approx(2.0)
    assert out.loc["performance_t50", "estimate"] == pytest.approx(2.375)  # 2 + (25 - 10) / (50 - 10)
    assert out.loc["lead_t50", "estimate"] == pytest.approx(0.375)
    assert out["x_unit"].iloc[0] == "training epoch"
