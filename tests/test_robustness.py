"""brainalign.analysis.robustness: planted answers and slow, obvious references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from brainalign.analysis.robustness import (
    ROBUSTNESS_COLUMNS,
    bonett_wright_ci,
    bootstrap_ci,
    cluster_bootstrap_ci,
    model_families,
    partial_correlation,
    permutation_p,
    robustness_table,
    weighted_pearson,
)
from brainalign.analysis.stats import spearman_ci


def test_weighted_pearson_is_the_pearson_of_the_repeated_sample():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=30), rng.normal(size=30)
    w = rng.integers(0, 4, size=(5, 30))
    got = weighted_pearson(x, y, w)
    want = [np.corrcoef(np.repeat(x, row), np.repeat(y, row))[0, 1] for row in w]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_bonett_wright_interval_stays_inside_minus_one_one_where_the_papers_leaves_it():
    lo, hi = spearman_ci(0.88, 36)  # the paper's language "Average" row: [0.67, 1.09]
    assert hi > 1.0
    lo, hi = bonett_wright_ci(0.88, 36)
    assert -1 < lo < 0.88 < hi < 1
    # pinned: tanh(atanh(.88) -/+ 1.96 sqrt((1 + .88^2 / 2) / 33)), worked by hand; the plain Fisher
    # standard error (without the 1 + rho^2 / 2 factor) would give (0.7757, 0.9375)
    assert (lo, hi) == pytest.approx((0.750419, 0.944439), abs=1e-6)
    for rho in np.linspace(-0.999, 0.999, 41):
        for n in (4, 10, 36, 594):
            lo, hi = bonett_wright_ci(rho, n)
            assert -1 <= lo <= rho <= hi <= 1
    assert all(math.isnan(v) for v in bonett_wright_ci(0.5, 3))


def test_partial_correlation_matches_the_first_order_formula():
    rng = np.random.default_rng(2)
    z = rng.normal(size=200)
    x, y = z + rng.normal(size=200), 0.5 * z + 0.3 * rng.normal(size=200)
    r, p = partial_correlation(x, y, z)
    rxy, rxz, ryz = (np.corrcoef(a, b)[0, 1] for a, b in ((x, y), (x, z), (y, z)))
    want = (rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert r == pytest.approx(want, abs=1e-12)
    t = want * math.sqrt(197 / (1 - want**2))
    assert p == pytest.approx(2 * sps.t.sf(abs(t), 197), rel=1e-9)


def test_a_size_only_zoo_has_a_high_raw_r_and_a_partial_r_near_zero():
    """Brain score and benchmark both driven by model size alone: the raw correlation is high,
    the partial correlation controlling for log(parameters) is not."""
    rng = np.random.default_rng(3)
    n = 300
    params = np.exp(rng.uniform(np.log(1), np.log(1000), n))  # millions
    size = np.log(params)
    scores = pd.DataFrame({"model": [f"m{i}" for i in range(n)], "cka_36": 0.1 * size + 0.05 * rng.normal(size=n),
                           "imagenet": 5 * size + 2 * rng.normal(size=n), "#Params (M)": params})
    table = robustness_table([("vision", scores, ["imagenet"], scores["model"])], "cka_36", n_resamples=500)
    row = table.iloc[0]
    assert row["pearson_r"] > 0.8
    assert abs(row["partial_r_log_params"]) < 0.15 and row["partial_p_log_params"] > 0.01
    assert row["r_score_log_params"] > 0.9 and row["n_partial_log_params"] == n
    # and a zoo where the benchmark matters beyond size keeps its partial r
    scores["imagenet"] = 5 * size + 20 * (scores["cka_36"] - 0.1 * size) + 0.2 * rng.normal(size=n)
    row = robustness_table([("vision", scores, ["imagenet"], scores["model"])], "cka_36", n_resamples=500).iloc[0]
    assert row["partial_r_log_params"] > 0.8


def test_models_repeated_within_families_widen_the_family_interval_against_the_naive_one():
    """12 independent families, each copied 10 times with tiny recipe noise: the naive bootstrap
    sees 120 models and is narrow; the cluster bootstrap sees 12 families and is wide."""
    rng = np.random.default_rng(4)
    fx = rng.normal(size=12)
    fy = 0.5 * fx + rng.normal(size=12)
    x = np.repeat(fx, 10) + 0.01 * rng.normal(size=120)
    y = np.repeat(fy, 10) + 0.01 * rng.normal(size=120)
    families = np.repeat([f"fam{i}" for i in range(12)], 10)
    naive = bootstrap_ci(x, y, 2000, seed=0)
    cluster = cluster_bootstrap_ci(x, y, families, 2000, seed=0)
    assert (cluster[1] - cluster[0]) > 2.5 * (naive[1] - naive[0])
    scores = pd.DataFrame({"cka_36": x, "imagenet": y})
    row = robustness_table([("vision", scores, ["imagenet"], families)], "cka_36", n_resamples=2000).iloc[0]
    assert row["n_models"] == 120 and row["n_families"] == 12
    assert row["family_mean_r"] == pytest.approx(np.corrcoef(fx, fy)[0, 1], abs=0.01)
    width = row["family_mean_ci_high"] - row["family_mean_ci_low"]  # Fisher on 12 families, not 120
    assert width > 2.5 * (row["paper_pearson_ci_high"] - row["paper_pearson_ci_low"])


def test_cluster_bootstrap_with_one_model_per_family_is_the_pairs_bootstrap_in_distribution():
    rng = np.random.default_rng(5)
    x = rng.normal(size=80)
    y = 0.4 * x + rng.normal(size=80)
    a = bootstrap_ci(x, y, 4000, seed=1)
    b = cluster_bootstrap_ci(x, y, [f"f{i}" for i in range(80)], 4000, seed=2)
    np.testing.assert_allclose(a, b, atol=0.03)


def test_permutation_p_matches_the_exact_enumeration_and_is_uniform_for_unrelated_scores():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=7), rng.normal(size=7)
    r = abs(np.corrcoef(x, y)[0, 1])
    exact = np.mean([abs(np.corrcoef(x, y[list(p)])[0, 1]) >= r - 1e-12 for p in itertools.permutations(range(7))])
    assert permutation_p(x, y, 20000, seed=0) == pytest.approx(exact, abs=0.01)
    ps = np.array([permutation_p(rng.normal(size=30), rng.normal(size=30), 199, seed=k) for k in range(300)])
    assert sps.kstest(ps, "uniform").pvalue > 0.01
    assert 0.02 < np.mean(ps <= 0.05) < 0.09


def test_robustness_table_columns_and_skips_missing_benchmarks():
    rng = np.random.default_rng(7)
    scores = pd.DataFrame({"cka_36": rng.normal(size=20), "imagenet": rng.normal(size=20),
                           "n_layers": rng.integers(6, 30, 20)})
    scores.loc[3, "imagenet"] = np.nan
    table = robustness_table([("vision", scores, ["imagenet", "sketch"], range(20))], "cka_36", n_resamples=200)
    assert table.columns.tolist() == ROBUSTNESS_COLUMNS and len(table) == 1
    row = table.iloc[0]
    assert row["n_models"] == 19 and row["n_partial_layers"] == 19 and np.isfinite(row["partial_r_layers"])
    assert math.isnan(row["partial_r_log_params"])  # no parameter column: said by NaN, not invented


def test_families_from_the_registry_else_architecture_else_name():
    from brainalign.models.registry import ModelEntry

    reg = {"a.x": ModelEntry("a.x", "vision", "timm", "resnet50", extra={"family": "resnet"}),
           "b": ModelEntry("b", "vision", "timm", "vit_base_patch16_224")}
    assert model_families(["a.x", "b", "c.in1k", "d@step8"], reg) == ["resnet", "vit_base_patch16_224", "c", "d"]
