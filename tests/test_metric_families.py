"""The metric families beyond the paper's 27 in the streaming engine: linear CKA and RSA with
Pearson r over the stimulus plane (checked against their definitions and rsatoolbox), the
metric-name registry ('all' = the paper's 27, 'every', family names), and the statistics table
that asks whether the headline survives the metric."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import rsatoolbox
from scipy import stats as sps

from brainalign.alignment.metrics import ALL_METRICS, EVERY_METRICS, resolve_metrics, score_matrices


def _z(a):
    return (a - a.mean(0)) / (a.std(0, ddof=1) + 1e-8)


def _data(n, seed=0):
    """Sources of several widths and targets that read them out with different noise (and one unrelated)."""
    rng = np.random.default_rng(seed)
    sources = [rng.standard_normal((n, d)) for d in (4, 25, 90)]
    targets = [sources[1] @ rng.standard_normal((25, 3)) + 0.5 * rng.standard_normal((n, 3)),
               sources[2] @ rng.standard_normal((90, 40)) + 3.0 * rng.standard_normal((n, 40)),
               rng.standard_normal((n, 2)),
               np.tanh(sources[0] @ rng.standard_normal((4, 12))) + 0.2 * rng.standard_normal((n, 12))]
    return sources, targets


def linear_cka_plane(x, y):
    """Biased linear CKA from its definition in the stimulus plane: centred Gram matrices."""
    x, y = _z(x), _z(y)
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def rsatoolbox_compare(x, y, method):
    rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(_z(a)), method="correlation") for a in (x, y)]
    return float(rsatoolbox.rdm.compare(rdms[0], rdms[1], method=method)[0, 0])


@pytest.mark.parametrize("n", [31, 57, 120])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_linear_cka_equals_its_definition_in_the_stimulus_plane(n, dtype):
    sources, targets = _data(n, seed=n)
    # a budget of a few rows per block: the plane is streamed in several blocks
    out = score_matrices(sources, targets, ["linear_cka"], dtype=dtype, max_bytes=(100 << 20) + 40 * n * 200)
    ref = np.array([[linear_cka_plane(a, b) for b in targets] for a in sources])
    assert np.abs(out["linear_cka"] - ref).max() < (1e-12 if dtype == "float64" else 1e-6)
    # and Kornblith et al.'s feature-space form ||Y'X||^2 / (||X'X|| ||Y'Y||) gives the same numbers
    x, y = _z(sources[2]), _z(targets[1])
    feat = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert out["linear_cka"][2, 1] == pytest.approx(feat, abs=1e-6)
    # the planted read-outs align more than the unrelated target
    assert out["linear_cka"][1, 0] > 2 * out["linear_cka"][1, 2]


@pytest.mark.parametrize("n", [31, 57, 120])
def test_rsa_pearson_equals_rsatoolbox_corr(n):
    sources, targets = _data(n, seed=n + 1)
    out = score_matrices(sources, targets, ["rsa_pearson", "cka_36"], max_bytes=(100 << 20) + 40 * n * 300)
    ref = np.array([[rsatoolbox_compare(a, b, "corr") for b in targets] for a in sources])
    assert np.abs(out["rsa_pearson"] - ref).max() < 1e-6
    assert out["rsa_pearson"][2, 1] > 0.3 > 0.15 > abs(out["rsa_pearson"][2, 2])


def test_rsa_pearson_is_independent_of_the_block_size_and_storage():
    sources, targets = _data(80, seed=3)
    runs = [score_matrices(sources, targets, ["rsa_pearson", "linear_cka"], dtype=dt, max_bytes=mb)
            for dt, mb in (("float64", None), ("float64", (64 << 20) + 1), ("float32", (64 << 20) + 50_000))]
    for other in runs[1:]:
        for name in ("rsa_pearson", "linear_cka"):
            assert np.abs(other[name] - runs[0][name]).max() < 1e-6


def test_rsa_of_a_one_voxel_roi_fails_naming_it():
    sources, targets = _data(40)
    with pytest.raises(ValueError, match=r"target 1 has stimuli whose pattern is constant"):
        score_matrices(sources, [targets[0], targets[1][:, :1]], ["rsa_pearson"])


def test_metric_names_all_every_and_families():
    assert len(ALL_METRICS) == 27 and [s.name for s in resolve_metrics("all")] == ALL_METRICS
    every = [s.name for s in resolve_metrics("every")]
    assert every == EVERY_METRICS and set(every) - set(ALL_METRICS) == {"linear_cka", "rsa_pearson",
                                                                      "rsa_spearman", "ridge"}
    assert [s.name for s in resolve_metrics("rsa")] == ["rsa_pearson", "rsa_spearman"]
    # the ceiling-normalised encoding score needs voxels' ceilings: by name only
    assert [s.name for s in resolve_metrics("ridge")] == ["ridge"]
    assert [s.name for s in resolve_metrics("ridge_nc")] == ["ridge_nc"]
    assert [s.name for s in resolve_metrics(["cka_36", "ridge", "linear_cka"])] == ["cka_36", "ridge", "linear_cka"]
    with pytest.raises(ValueError, match="unknown metric 'rigde'"):
        resolve_metrics("rigde")


def test_ridge_nc_divides_each_voxels_r_by_the_root_of_its_ceiling():
    from brainalign.alignment.encoding import ridge_voxel_scores

    sources, targets = _data(80, seed=5)
    with pytest.raises(ValueError, match="ridge_nc needs each target voxel's noise ceiling"):
        score_matrices(sources, targets, ["ridge_nc"])
    rng = np.random.default_rng(1)
    ceilings = [rng.uniform(0.2, 0.9, t.shape[1]) for t in targets]
    ceilings[2][:] = 0.0  # no voxel with a ceiling: NaN
    ceilings[1][::3] = np.nan  # unknown voxels are left out
    out = score_matrices(sources, targets, ["ridge", "ridge_nc"], voxel_ceilings=ceilings)
    import torch

    r = ridge_voxel_scores([torch.as_tensor(_z(x)) for x in sources], [torch.as_tensor(_z(y)) for y in targets])
    edges = np.cumsum([0] + [t.shape[1] for t in targets])
    for j, nc in enumerate(ceilings):
        rj = r[:, edges[j]:edges[j + 1]]
        np.testing.assert_allclose(out["ridge"][:, j], rj.mean(1), atol=1e-10)
        ok = np.isfinite(nc) & (nc > 0)
        want = (rj[:, ok] / np.sqrt(nc[ok])).mean(1) if ok.any() else np.full(len(sources), np.nan)
        np.testing.assert_allclose(out["ridge_nc"][:, j], want, atol=1e-10)
    assert np.isnan(out["ridge_nc"][:, 2]).all()


def test_only_non_plane_metrics_skip_the_streaming_passes():
    sources, targets = _data(60)
    stats = {}
    out = score_matrices(sources, targets, ["ridge"], stats=stats)
    assert stats["passes"] == 0 and out["ridge"].shape == (3, 4)
    stats = {}
    score_matrices(sources, targets, ["linear_cka"], stats=stats)
    assert stats["passes"] == 1


def test_headline_by_metric_values_against_an_independent_computation():
    """Every column the table states for one metric, recomputed here from the model scores with
    numpy/scipy formulas written out (not the module's helpers)."""
    from brainalign.analysis.robustness import headline_by_metric

    rng = np.random.default_rng(0)
    n = 40
    bench = rng.uniform(0.5, 0.9, n)
    scores = pd.DataFrame({"model": [f"m{i}" for i in range(n)], "imagenet": bench,
                           "cka_36": bench + rng.normal(0, 0.05, n), "ridge": rng.normal(0, 1, n),
                           "#Params (M)": rng.uniform(1, 100, n)})
    families = [f"f{i % 10}" for i in range(n)]
    table = headline_by_metric([("vision", scores, "imagenet", families)], ["cka_36", "ridge", "linear_cka"],
                               n_resamples=500, seed=0)
    assert table["metric"].tolist() == ["cka_36", "ridge"]  # a metric the scores lack is skipped
    assert table["family"].tolist() == ["cka", "ridge"]
    for _, row in table.iterrows():
        x = scores[row["metric"]].to_numpy()
        r = np.corrcoef(x, bench)[0, 1]
        rho = sps.spearmanr(x, bench).statistic
        assert row["pearson_r"] == pytest.approx(r, abs=1e-12)
        assert row["spearman_rho"] == pytest.approx(rho, abs=1e-12)
        half = 1.96 * math.sqrt((1 + rho**2 / 2) / (n - 3))  # Bonett-Wright
        assert row["spearman_bw_ci_low"] == pytest.approx(math.tanh(math.atanh(rho) - half), abs=1e-9)
        assert row["spearman_bw_ci_high"] == pytest.approx(math.tanh(math.atanh(rho) + half), abs=1e-9)
        # partial r given log(params): residuals of both on [1, log p]
        design = np.column_stack([np.ones(n), np.log(scores["#Params (M)"])])
        res = [v - design @ np.linalg.lstsq(design, v, rcond=None)[0] for v in (x, bench)]
        assert row["partial_r_log_params"] == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-9)
        assert row["n_models"] == n and row["n_families"] == 10
        assert row["cluster_bootstrap_ci_low"] < row["pearson_r"] < row["cluster_bootstrap_ci_high"]
    assert table.set_index("metric").loc["cka_36", "pearson_r"] > 0.9
