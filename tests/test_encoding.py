"""The ridge encoding metric against scikit-learn, brute-force GCV, and its own invariants."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import KFold

from brainalign.alignment.encoding import DEFAULT_ALPHAS, kfold_indices, ridge_scores, ridge_voxel_scores

GRID = DEFAULT_ALPHAS
TOL = 1e-6


def z(a) -> torch.Tensor:
    """z-score columns as the engine does (unbiased std, eps 1e-8), float64."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    return (a - a.mean(0, keepdim=True)) / (a.std(0, keepdim=True) + 1e-8)


def planted(n: int, d: int, v: int, seed: int, kind: str = "planted"):
    """Correlated features; voxels = linear read-outs at noise levels from ~0 to pure noise (last voxel)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal((n, d))
    if kind == "random":
        return z(x), z(rng.standard_normal((n, v)))
    y = x @ rng.standard_normal((d, v)) / np.sqrt(d) + np.logspace(-2, 1.5, v) * rng.standard_normal((n, v))
    y[:, -1] = rng.standard_normal(n)
    return z(x), z(y)


def cv_predictions(x, y, folds, seed, fit_predict):
    """Out-of-fold predictions (n, v) and per-fold alphas (K, v) from ``fit_predict(xtr, ytr, xte)``."""
    x, y = x.numpy(), y.numpy()
    n = len(x)
    pred, alphas = np.zeros_like(y), []
    for te in kfold_indices(n, folds, seed):
        tr = np.setdiff1d(np.arange(n), te)
        pred[te], a = fit_predict(x[tr], y[tr], x[te])
        alphas.append(a)
    return pred, np.array(alphas)


def pearson_cols(a, b) -> np.ndarray:
    return np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])])


def sk_loo(xtr, ytr, xte, grid=GRID):
    m = RidgeCV(alphas=grid, alpha_per_target=True).fit(xtr, ytr)
    return m.predict(xte), m.alpha_


def brute_gcv(xtr, ytr, xte, grid=GRID):
    """GCV from sklearn Ridge's residuals and the explicit hat matrix, per-voxel argmin, refit."""
    ntr, d = xtr.shape
    xc = xtr - xtr.mean(0)
    scores = []
    for a in grid:
        res = ytr - Ridge(alpha=a).fit(xtr, ytr).predict(xtr)
        hat = np.full((ntr, ntr), 1.0 / ntr) + xc @ np.linalg.solve(xc.T @ xc + a * np.eye(d), xc.T)
        scores.append((res**2).sum(0) / ntr / (1 - np.trace(hat) / ntr) ** 2)
    best = np.asarray(grid)[np.argmin(np.array(scores), 0)]
    pred = np.column_stack([Ridge(alpha=a).fit(xtr, ytr[:, j]).predict(xte) for j, a in enumerate(best)])
    return pred, best


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", ["planted", "random"])
@pytest.mark.parametrize("shape", [(60, 10), (50, 80), (120, 30)])
def test_loo_equals_sklearn_ridgecv(shape, kind):
    n, d = shape
    x, y = planted(n, d, 9, seed=n + d, kind=kind)
    rois = [y[:, :4], y[:, 4:5], y[:, 5:]]
    pred, ref_alpha = cv_predictions(x, y, 5, 3, sk_loo)
    ref = pearson_cols(pred, y.numpy())
    r, alpha = ridge_voxel_scores([x], rois, folds=5, seed=3, selection="loo", return_alphas=True)
    np.testing.assert_allclose(r[0], ref, atol=TOL, rtol=0)
    np.testing.assert_array_equal(alpha[0], ref_alpha)
    got = ridge_scores([x], rois, folds=5, seed=3, selection="loo")["ridge"][0]
    np.testing.assert_allclose(got, [ref[:4].mean(), ref[4], ref[5:].mean()], atol=TOL, rtol=0)
    if kind == "planted":  # the grid is really searched: clean voxels get small alphas, noise a large one
        assert alpha[0, :, 0].max() < alpha[0, :, -1].min()


@pytest.mark.parametrize("kind", ["planted", "random"])
@pytest.mark.parametrize("shape", [(60, 10), (50, 80), (120, 30), (200, 8)])
def test_gcv_equals_brute_force(shape, kind):
    n, d = shape
    x, y = planted(n, d, 7, seed=2 * n + d, kind=kind)
    pred, ref_alpha = cv_predictions(x, y, 4, 1, brute_gcv)
    ref = pearson_cols(pred, y.numpy())
    for prediction in ("moments", "explicit"):  # the two ways to the held-out sums (primal route)
        r, alpha = ridge_voxel_scores([x], [y[:, :3], y[:, 3:]], folds=4, seed=1, return_alphas=True,
                                      prediction=prediction)
        np.testing.assert_allclose(r[0], ref, atol=TOL, rtol=0)
        np.testing.assert_array_equal(alpha[0], ref_alpha)
    got = ridge_scores([x], [y[:, :3], y[:, 3:]], folds=4, seed=1)["ridge"][0]
    np.testing.assert_allclose(got, [ref[:3].mean(), ref[3:].mean()], atol=TOL, rtol=0)


def test_several_sources_and_targets_are_independent_pairs():
    x1, y = planted(80, 12, 6, seed=5)
    x2, _ = planted(80, 100, 1, seed=6)  # wider than a training fold: the dual route
    rois = [y[:, :2], y[:, 2:]]
    both = ridge_scores([x1, x2], rois, folds=5, seed=0)["ridge"]
    for i, x in enumerate((x1, x2)):
        for j, t in enumerate(rois):
            alone = ridge_scores([x], [t], folds=5, seed=0)["ridge"]
            np.testing.assert_allclose(both[i, j], alone[0, 0], atol=1e-12)


# ----------------------------------------------------------------------------- per-voxel alpha


def test_alpha_is_chosen_per_voxel():
    rng = np.random.default_rng(11)
    n, d = 100, 40
    x = rng.standard_normal((n, d))
    clean = x @ rng.standard_normal(d) + 0.05 * rng.standard_normal(n)
    noisy = 0.3 * x @ rng.standard_normal(d) / np.sqrt(d) + rng.standard_normal(n)
    x, y = z(x), z(np.column_stack([clean, noisy]))
    r, alpha = ridge_voxel_scores([x], [y], folds=5, seed=0, selection="loo", return_alphas=True)
    assert np.all(alpha[0, :, 0] * 100 <= alpha[0, :, 1])  # two decades apart on every fold
    # each voxel scores as it does alone: nothing is shared between voxels
    for j in range(2):
        np.testing.assert_allclose(r[0, j], ridge_voxel_scores([x], [y[:, j:j + 1]], folds=5, seed=0,
                                                               selection="loo")[0, 0], atol=1e-12)
    # one alpha shared by both voxels (sklearn's RidgeCV without alpha_per_target) scores worse
    shared = pearson_cols(cv_predictions(x, y, 5, 0, lambda a, b, c: (
        RidgeCV(alphas=GRID).fit(a, b).predict(c), 0.0))[0], y.numpy())
    roi = ridge_scores([x], [y], folds=5, seed=0, selection="loo")["ridge"][0, 0]
    assert roi > shared.mean() + 0.02
    np.testing.assert_allclose(roi, r[0].mean(), atol=1e-12)


# ----------------------------------------------------------------------------- no leakage


def test_pure_noise_target_scores_near_zero_out_of_fold():
    rng = np.random.default_rng(4)
    x, y = z(rng.standard_normal((120, 60))), z(rng.standard_normal((120, 30)))
    r = ridge_voxel_scores([x], [y], folds=5, seed=0)[0]
    # near zero or below (held-out folds' means differ from the training folds': a small negative bias)
    assert -0.25 < r.mean() < 0.05
    # the same model scored on the data it was fitted on would look good: the test can tell
    xs, ys = x.numpy(), y.numpy()
    fit = RidgeCV(alphas=GRID, alpha_per_target=True).fit(xs, ys)
    assert pearson_cols(fit.predict(xs), ys).mean() > 0.3


@pytest.mark.parametrize("selection", ["gcv", "loo"])
@pytest.mark.parametrize("d", [15, 90])
def test_held_out_responses_do_not_change_the_fold_alpha(selection, d):
    x, y = planted(80, d, 8, seed=d)
    folds = kfold_indices(80, 5, 7)
    _, alpha = ridge_voxel_scores([x], [y], folds=5, seed=7, selection=selection, return_alphas=True)
    y2 = y.clone()
    y2[folds[2]] += 3.0 * torch.randn(len(folds[2]), 8, generator=torch.Generator().manual_seed(0),
                                      dtype=torch.float64)
    _, alpha2 = ridge_voxel_scores([x], [y2], folds=5, seed=7, selection=selection, return_alphas=True)
    np.testing.assert_array_equal(alpha2[0, 2], alpha[0, 2])  # fold 2's model never saw fold 2
    assert np.any(alpha2[0, [0, 1, 3, 4]] != alpha[0, [0, 1, 3, 4]])  # the others did


# ----------------------------------------------------------------------------- folds


@pytest.mark.parametrize("n,k", [(10, 2), (23, 5), (100, 7), (8859, 5)])
def test_kfold_indices_match_sklearn_sizes_and_partition(n, k):
    folds = kfold_indices(n, k, seed=3)
    assert [len(f) for f in folds] == [len(te) for _, te in KFold(n_splits=k).split(np.zeros(n))]
    allidx = np.concatenate(folds)
    assert len(allidx) == n and np.array_equal(np.sort(allidx), np.arange(n))  # disjoint, cover all
    perm = np.random.default_rng(3).permutation(n)
    start = 0
    for f in folds:  # consecutive parts of the seeded permutation
        assert np.array_equal(f, np.sort(perm[start:start + len(f)]))
        start += len(f)
    assert all(np.array_equal(a, b) for a, b in zip(folds, kfold_indices(n, k, seed=3), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(folds, kfold_indices(n, k, seed=4), strict=True))


# ----------------------------------------------------------------------------- aggregates, ceilings


def test_median_and_noise_ceiling_aggregates():
    x, y = planted(90, 12, 10, seed=9)
    rois = [y[:, :6], y[:, 6:9], y[:, 9:]]
    r = ridge_voxel_scores([x], rois, folds=5, seed=0)[0]
    nc = [np.array([0.5, np.nan, 0.9, 0.0, 1.0, 0.25]), np.full(3, np.nan), np.array([0.64])]
    mean = ridge_scores([x], rois, folds=5, seed=0, voxel_ceilings=nc)
    med = ridge_scores([x], rois, folds=5, seed=0, aggregate="median", voxel_ceilings=nc)
    parts = [r[:6], r[6:9], r[9:]]
    np.testing.assert_allclose(mean["ridge"][0], [p.mean() for p in parts], atol=1e-12)
    np.testing.assert_allclose(med["ridge"][0], [np.median(p) for p in parts], atol=1e-12)
    assert abs(mean["ridge"][0, 0] - med["ridge"][0, 0]) > 1e-3
    ok = np.isfinite(nc[0]) & (nc[0] > 0)
    ref = parts[0][ok] / np.sqrt(nc[0][ok])
    np.testing.assert_allclose(mean["ridge_nc"][0, 0], ref.mean(), atol=1e-12)
    np.testing.assert_allclose(med["ridge_nc"][0, 0], np.median(ref), atol=1e-12)
    assert np.isnan(mean["ridge_nc"][0, 1])  # no voxel with a known ceiling
    np.testing.assert_allclose(mean["ridge_nc"][0, 2], r[9] / 0.8, atol=1e-12)
    assert "ridge_nc" not in ridge_scores([x], rois, folds=5, seed=0)


# ----------------------------------------------------------------------------- errors and degenerate inputs


def test_errors_name_the_problem():
    x, y = planted(9, 3, 4, seed=0)
    with pytest.raises(ValueError, match=r"n = 9 stimuli cannot make 5 folds of >= 2"):
        ridge_scores([x], [y], folds=5)
    with pytest.raises(ValueError, match="folds >= 2"):
        ridge_scores([x], [y], folds=1)
    x, y = planted(40, 3, 4, seed=0)
    bad = y.clone()
    bad[:, [1, 3]] = 0.0
    with pytest.raises(ValueError, match=r"target 1 has 2 constant voxel\(s\) of 4.*drop those voxels"):
        ridge_scores([x], [y, bad])
    with pytest.raises(ValueError, match="unknown selection 'cv'"):
        ridge_scores([x], [y], selection="cv")
    with pytest.raises(ValueError, match="unknown aggregate 'max'"):
        ridge_scores([x], [y], aggregate="max")
    with pytest.raises(ValueError, match="voxel_ceilings"):
        ridge_scores([x], [y], voxel_ceilings=[np.ones(3)])


def test_constant_inputs_give_nan_and_one_voxel_rois_are_fine():
    x, y = planted(40, 5, 4, seed=2)
    dead_x = torch.zeros(40, 5, dtype=torch.float64)
    dead_y = torch.zeros(40, 3, dtype=torch.float64)
    out = ridge_scores([x, dead_x], [y, dead_y, y[:, :1]], folds=4, voxel_ceilings=[np.ones(4), np.ones(3),
                                                                                    np.ones(1)])
    assert np.isnan(out["ridge"][1]).all() and np.isnan(out["ridge_nc"][1]).all()
    assert np.isnan(out["ridge"][0, 1])
    assert np.isfinite(out["ridge"][0, [0, 2]]).all()
    np.testing.assert_allclose(out["ridge"][0, 2], ridge_voxel_scores([x], [y], folds=4)[0, 0], atol=1e-12)
    # a constant feature inside a varying source changes nothing
    padded = torch.cat([x, torch.zeros(40, 2, dtype=torch.float64)], 1)
    np.testing.assert_allclose(ridge_scores([padded], [y], folds=4)["ridge"], out["ridge"][:1, :1], atol=1e-12)


# ----------------------------------------------------------------------------- chunking, logging


@pytest.mark.parametrize("selection", ["gcv", "loo"])
@pytest.mark.parametrize("d", [6, 20, 70])  # primal moments, primal explicit, dual
def test_voxel_chunks_give_identical_scores(selection, d):
    x, y = planted(60, d, 23, seed=d)
    rois = [y[:, :5], y[:, 5:6], y[:, 6:17], y[:, 17:]]
    st: dict = {}
    whole = ridge_voxel_scores([x], rois, folds=5, seed=0, selection=selection, stats=st)
    info = st["sources"][0]
    assert info["chunks"] == (1 if info["route"] == "primal" else 5)
    st2: dict = {}
    small = ridge_voxel_scores([x], rois, folds=5, seed=0, selection=selection, stats=st2,
                               max_bytes=info["fixed_bytes"] + 4 * info["bytes_per_voxel"])
    assert st2["sources"][0]["chunk_voxels"] == 4 and st2["sources"][0]["chunks"] > info["chunks"]
    np.testing.assert_allclose(small, whole, atol=1e-12, rtol=0)


def test_progress_lines(caplog):
    x, y = planted(40, 5, 3, seed=1)
    with caplog.at_level(logging.INFO, logger="brainalign.alignment.encoding"):
        ridge_scores([x, x], [y], folds=4, what="ridge[V1]")
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("ridge[V1]: source 2/2, ") and m.endswith(" s") for m in lines)
