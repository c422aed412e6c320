"""The 27 metric variants of ``brainalign.alignment.metrics`` against a slow, obvious float64 numpy reference.

The reference below is written straight from the paper's formulas, one (source, target) pair at a
time, recomputing everything (z-score, kernels, neighbours) per pair; it shares no code with the
engine. The engine is checked for every variant on random, linear read-out and clustered low-rank
data, with several sources and targets of different widths, with and without forced CKA chunking.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pandas as pd
import pytest
import torch

import brainalign
from brainalign.alignment.metrics import (
    ALL_METRICS,
    CKA_SIGMAS,
    CKNNA_K,
    CYCLE_KNN_K,
    MUTUAL_KNN_K,
    resolve_metrics,
    score_matrices,
)

ATOL = 1e-5
N_SMALL = 60   # every variant whose k < 60 (and every CKA)
N_LARGE = 1000  # the neighbour variants with k >= 60: n >= 2 k even for k = 400

# ----------------------------------------------------------------------------- reference (numpy, float64)


def ref_zscore(x):
    """Columns z-scored across rows, unbiased std, eps 1e-8."""
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(axis=0)) / (x.std(axis=0, ddof=1) + 1e-8)


def ref_gram(z):
    """G[i, j] = sum_c z[i, c] z[j, c], entry by entry (identical rows give bit-identical entries)."""
    return (z[:, None, :] * z[None, :, :]).sum(axis=-1)


def ref_neighbours(z, k, lowest_first=True):
    """Top-k rows by inner product, self excluded, ties to the lowest index (or the highest).

    The engine's tie rule: inner products are compared after rounding to 1e-9 of the largest one,
    so values within that of each other count as tied (the rule that makes results device-independent).
    """
    g = ref_gram(z)
    g = np.round(g / (1e-9 * np.abs(g).max()))
    np.fill_diagonal(g, -np.inf)
    if lowest_first:
        return np.argsort(-g, axis=1, kind="stable")[:, :k]
    n = g.shape[0]
    rev = np.argsort(-g[:, ::-1], axis=1, kind="stable")[:, :k]
    return n - 1 - rev


def ref_rbf(z, sigma):
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=-1)
    return np.exp(-d2 / (2.0 * sigma**2))


def ref_hsic_biased(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h)


def ref_cka(x, y, sigma):
    k, l = ref_rbf(ref_zscore(x), sigma), ref_rbf(ref_zscore(y), sigma)
    return ref_hsic_biased(k, l) / (np.sqrt(ref_hsic_biased(k, k) * ref_hsic_biased(l, l)) + 1e-6)


def ref_mutual_knn(x, y, k, lowest_first=True):
    nx = ref_neighbours(ref_zscore(x), k, lowest_first)
    ny = ref_neighbours(ref_zscore(y), k, lowest_first)
    return float(np.mean([len(set(nx[i]) & set(ny[i])) / k for i in range(len(nx))]))


def ref_cycle_knn(x, y, k, lowest_first=True):
    nx = [set(r) for r in ref_neighbours(ref_zscore(x), k, lowest_first)]
    ny = ref_neighbours(ref_zscore(y), k, lowest_first)
    return float(np.mean([any(i in nx[j] for j in ny[i]) for i in range(len(ny))]))


def ref_hsic_unbiased(k, l):
    """Song et al. 2012, eq. 5."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    return (np.sum(kt * lt.T) + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
            - 2.0 * np.sum(kt @ lt) / (n - 2)) / (n * (n - 3))


def ref_mask(z, k, lowest_first=True):
    idx = ref_neighbours(z, k, lowest_first)
    m = np.zeros((len(z), len(z)))
    for i, row in enumerate(idx):
        m[i, row] = 1.0
    return m


def ref_cknna(x, y, k, lowest_first=True):
    zx, zy = ref_zscore(x), ref_zscore(y)
    kk, ll = ref_gram(zx), ref_gram(zy)
    mx, my = ref_mask(zx, k, lowest_first), ref_mask(zy, k, lowest_first)
    m = mx * my
    sim_kl = ref_hsic_unbiased(m * kk, m * ll)
    sim_kk = ref_hsic_unbiased(mx * kk, mx * kk)
    sim_ll = ref_hsic_unbiased(my * ll, my * ll)
    return sim_kl / (np.sqrt(sim_kk * sim_ll) + 1e-6)


def ref_metric(name, x, y, lowest_first=True):
    """One metric variant for one pair, by name."""
    if name.startswith("cka_"):
        return ref_cka(x, y, int(name.split("_")[1]))
    if name in CKNNA_K:
        return ref_cknna(x, y, CKNNA_K[name], lowest_first)
    if name.startswith("mutual_knn_"):
        return ref_mutual_knn(x, y, int(name.rsplit("_", 1)[1]), lowest_first)
    if name.startswith("cycle_knn_"):
        return ref_cycle_knn(x, y, int(name.rsplit("_", 1)[1]), lowest_first)
    raise KeyError(name)


def ref_matrix(name, sources, targets, lowest_first=True):
    return np.array([[ref_metric(name, x, y, lowest_first) for y in targets] for x in sources])


def metric_param(name):
    if name in CKNNA_K:
        return CKNNA_K[name]
    return int(name.rsplit("_", 1)[1])


SMALL_METRICS = [m for m in ALL_METRICS if m.startswith("cka_") or metric_param(m) < N_SMALL]
LARGE_METRICS = [m for m in ALL_METRICS if m not in SMALL_METRICS]

# ----------------------------------------------------------------------------- data


def _gaussian(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, d)) for d in (3, 8, 17)], [rng.normal(size=(n, v)) for v in (5, 11, 30)]


def _readout(n, seed):
    """Targets are noisy linear read-outs of the sources."""
    rng = np.random.default_rng(seed)
    sources = [rng.normal(size=(n, d)) for d in (4, 12, 20)]
    targets = [
        sources[0] @ rng.normal(size=(4, 6)) + 0.3 * rng.normal(size=(n, 6)),
        sources[1] @ rng.normal(size=(12, 25)) + 0.5 * rng.normal(size=(n, 25)),
        np.hstack([sources[2][:, :5], sources[0]]) @ rng.normal(size=(9, 9)) + 0.1 * rng.normal(size=(n, 9)),
    ]
    return sources, targets


def _clustered(n, seed):
    """Low-rank (rank 2) latent with 5 clusters, embedded at several widths with small noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=n)
    centres = 3.0 * rng.normal(size=(5, 2))
    latent = centres[labels] + 0.4 * rng.normal(size=(n, 2))

    def embed(w, noise):
        return latent @ rng.normal(size=(2, w)) + noise * rng.normal(size=(n, w))

    return [embed(3, 0.05), embed(10, 0.2), rng.normal(size=(n, 7))], [embed(6, 0.1), embed(24, 0.3)]


DATASETS = {"gaussian": _gaussian, "readout": _readout, "clustered": _clustered}


@functools.cache
def dataset(kind, n):
    return DATASETS[kind](n, seed=list(DATASETS).index(kind) * 1000 + n)


@functools.cache
def engine(kind, n, metrics, max_bytes=2 << 30):
    sources, targets = dataset(kind, n)
    return score_matrices(sources, targets, list(metrics), max_bytes=max_bytes)


def assert_close(name, got, want, atol=ATOL):
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(~(np.abs(got - want) <= atol))
    assert bad.size == 0, (
        f"{name}: engine != reference at (source, target) {[tuple(b) for b in bad]}: "
        + "; ".join(f"engine {got[tuple(b)]!r} vs reference {want[tuple(b)]!r}" for b in bad)
    )


# ----------------------------------------------------------------------------- 1. engine vs reference


@pytest.mark.parametrize("kind", list(DATASETS))
@pytest.mark.parametrize("name", SMALL_METRICS)
def test_small_n_matches_reference(kind, name):
    """Each variant with k < 60 (and every CKA), all pairs, n = 60."""
    sources, targets = dataset(kind, N_SMALL)
    got = engine(kind, N_SMALL, tuple(SMALL_METRICS))[name]
    assert_close(f"{name} [{kind}, n={N_SMALL}]", got, ref_matrix(name, sources, targets))


def neighbour_count(name, score, n):
    """A mutual / cycle k-NN score as the integer it is a ratio of: mutual_knn_k = (matches over all
    rows) / (n k), cycle_knn_k = (stimuli whose cycle closes) / n."""
    scale = n * metric_param(name) if name.startswith("mutual_knn_") else n
    return np.rint(np.asarray(score) * scale).astype(np.int64)


def ref_order(x):
    """Every other stimulus of each row, best neighbour first (the reference's tie rule): (n, n - 1)."""
    z = ref_zscore(x)
    return ref_neighbours(z, len(z) - 1)


def ref_masks(order, k):
    """M[i, j] = 1 when j is among the k nearest neighbours of i (a prefix of the full order)."""
    m = np.zeros((len(order), len(order)), dtype=bool)
    np.put_along_axis(m, order[:, :k], True, axis=1)
    return m


def ref_count(name, order_x, order_y):
    """The integer a mutual / cycle k-NN score counts, from the two full orders, as dense masks:
    mutual: sum_i |NN_X(i) & NN_Y(i)|; cycle: #{i : some j in NN_Y(i) has i in NN_X(j)}."""
    k = metric_param(name)
    mx, my = ref_masks(order_x, k), ref_masks(order_y, k)
    if name.startswith("mutual_knn_"):
        return int((mx & my).sum())
    return int((my & mx.T).any(axis=1).sum())


N_KNN = 1000  # >= 2 k for the largest k (400)
KNN_METRICS = [m for m in ALL_METRICS if m.startswith(("mutual_knn_", "cycle_knn_"))]


@functools.cache
def _knn_data(n=N_KNN, seed=5):
    """Two sources and two targets, 2-4 columns, all noisy views of one 2-D latent, in which 15% of
    the stimuli are weak (every view of them shrunk 50-fold). Weak stimuli sit mid-row in everyone's
    inner products, so they are rarely among anyone's 400 neighbours: cycle_knn_400 stays well below 1 (on
    plain Gaussian data it is ~1 at n = 2.5 k whatever the code does); the shared latent keeps
    mutual_knn_20 well above its chance level k / n = 0.02."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    weak = rng.random(n) < 0.15

    def view(w, noise):
        x = latent @ rng.normal(size=(2, w)) + noise * rng.normal(size=(n, w))
        x[weak] *= 0.02
        return x

    sources, targets = [view(2, 0.1), view(3, 0.6)], [view(3, 0.3), view(4, 1.0)]
    orders = [ref_order(x) for x in sources + targets]
    want = {name: np.array([[ref_count(name, ox, oy) for oy in orders[2:]] for ox in orders[:2]])
            for name in KNN_METRICS}
    return sources, targets, want


def test_knn_reference_data_is_not_trivial():
    """Every mutual / cycle count of the n = 1,000 data is well inside (0, its maximum): no variant is
    0 or 1 whatever the code does, and one wrong neighbour changes the integer compared."""
    _, _, want = _knn_data()
    for name in KNN_METRICS:
        top = N_KNN * metric_param(name) if name.startswith("mutual_knn_") else N_KNN
        frac = want[name] / top
        assert (frac > 0.05).all() and (frac < 0.95).all(), (name, frac)
    # the reference's counts agree with its per-row formulas (ref_mutual_knn, ref_cycle_knn)
    sources, targets, _ = _knn_data()
    for name in ("mutual_knn_400", "cycle_knn_400", "mutual_knn_20", "cycle_knn_40"):
        assert neighbour_count(name, ref_metric(name, sources[1], targets[0]), N_KNN) == want[name][1, 0], name


@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("rows", [N_KNN, 97], ids=["one_block", "blocks_of_97"])
def test_knn_counts_match_reference_at_n_2k(rows, path, monkeypatch):
    """Every mutual / cycle k-NN variant (k = 20 .. 400) at n = 1,000 >= 2 k, all 2 x 2 pairs, as exact
    integer counts (not within a tolerance: at k = 400 one neighbour is 2.5e-6 of the score), in one
    block and in blocks of 97 rows (which do not divide n); counted by the CPU kernel
    (brainalign.alignment.rank_counts) and by the torch gathers every device runs."""
    from brainalign.alignment import engine, rank_counts

    monkeypatch.setattr(engine, "RANK_KERNEL", path == "kernel")  # (by default, only from 2^21 entries a block)
    assert path == "torch" or rank_counts.available(), "numba's kernel does not run here"
    sources, targets, want = _knn_data()
    stats = {}
    got = score_matrices(sources, targets, KNN_METRICS, stats=stats,
                         max_bytes=budget_for(rows, sources, targets, KNN_METRICS))
    assert stats["block_rows"] == rows
    bad = []
    for name in KNN_METRICS:
        count = neighbour_count(name, got[name], N_KNN)
        if not np.array_equal(count, want[name]):
            bad.append(f"{name}: engine counts {count.tolist()} != reference {want[name].tolist()}")
    assert not bad, f"[blocks of {rows}] " + "; ".join(bad)


def test_rank_kernel_counts_equal_the_torch_gathers():
    """The CPU kernel's mutual and cycle counts for one row block equal the torch formulas' (those of
    engine._source_block on other devices), for lists whose ranks are absent (BIG), present at every rank,
    and ks that are not a prefix of the lists; either family alone too."""
    import torch

    from brainalign.alignment.engine import BIG
    from brainalign.alignment.rank_counts import rank_counts

    rng = np.random.default_rng(3)
    b, T, k, n = 23, 7, 50, 300
    flat = np.stack([np.concatenate([rng.choice(n, k, replace=False) for _ in range(T)]) for _ in range(b)])
    fwd = np.full((b, n), BIG, np.int16)
    back = np.full((b, n), BIG, np.int16)
    for i in range(b):
        fwd[i, rng.choice(n, k, replace=False)] = np.arange(k)
        back[i, rng.choice(n, 3 * k, replace=False)] = rng.integers(0, 2 * k, 3 * k)
    mks, cks = [10, 3, 50, 11], [1, 49, 7, 25, 50]  # (in any order)
    mut, cyc = rank_counts(flat, fwd, back, T, k, mks, cks)
    rx = torch.from_numpy(fwd).gather(1, torch.from_numpy(flat)).view(b, T, k)
    rt = torch.from_numpy(back).gather(1, torch.from_numpy(flat)).view(b, T, k)
    first = torch.maximum(rt, torch.arange(k, dtype=torch.int16)).amin(2)
    for q, km in enumerate(mks):
        np.testing.assert_array_equal(mut[:, q], (rx[:, :, :km] < km).sum((0, 2)).numpy(), err_msg=f"mutual {km}")
    for q, kc in enumerate(cks):
        np.testing.assert_array_equal(cyc[:, q], (first < kc).sum(0).numpy(), err_msg=f"cycle {kc}")
    assert mut[:, -1].sum() > 0 and 0 < cyc[:, 2].sum() < b * T  # neither trivially zero nor full
    np.testing.assert_array_equal(rank_counts(flat, fwd, None, T, k, mks, [])[0], mut)
    np.testing.assert_array_equal(rank_counts(flat, None, back, T, k, [], cks)[1], cyc)


@pytest.mark.parametrize("path", ["kernel", "torch"])
def test_cknna_50_matches_reference_at_n_1000(path, monkeypatch):
    """CKNNA at its largest k (50) at n = 1,000 (at n = 60 its masks are nearly full), summed by the
    CPU kernel (brainalign.alignment.rank_counts.cknna_sums) and by the torch gathers every device runs."""
    from brainalign.alignment import engine

    monkeypatch.setattr(engine, "RANK_KERNEL", path == "kernel")
    sources, targets, _ = _knn_data()
    want = ref_matrix("cknna_50", sources, targets)
    assert (want > 0.01).all() and (want < 0.95).all(), want
    got = score_matrices(sources, targets, ["cknna_50"], max_bytes=budget_for(333, sources, targets, ["cknna_50"]))
    assert_close("cknna_50 [n=1000]", got["cknna_50"], want, atol=1e-10)


def budget_for(rows, sources, targets, metrics, dtype="float32"):
    """The max_bytes that makes the engine run blocks of exactly ``rows`` rows."""
    from brainalign.alignment.engine import Plan, memory_plan

    fixed, per_row = memory_plan(len(sources[0]), len(sources), len(targets), Plan.of(resolve_metrics(metrics)),
                                 np.dtype(dtype).itemsize)
    return fixed + rows * per_row


N_BLOCKS = 67  # not a multiple of any block size below


@pytest.mark.parametrize("kind", list(DATASETS))
@pytest.mark.parametrize("rows", [1, 8, 16, 30, N_BLOCKS])
def test_block_sizes_match_reference(kind, rows):
    """Every variant (k < n) against the reference, for blocks of 1 .. n rows, most not dividing n."""
    sources, targets = dataset(kind, N_BLOCKS)
    metrics = tuple(m for m in SMALL_METRICS)
    stats = {}
    got = score_matrices(sources, targets, list(metrics), max_bytes=budget_for(rows, sources, targets, metrics),
                         stats=stats)
    assert stats["block_rows"] == rows and stats["blocks"] == -(-N_BLOCKS // rows)
    assert stats["passes"] == 2
    for name in metrics:
        assert_close(f"{name} [{kind}, n={N_BLOCKS}, blocks of {rows}]", got[name],
                     _block_reference(kind, name))


@functools.cache
def _block_reference(kind, name):
    sources, targets = dataset(kind, N_BLOCKS)
    return ref_matrix(name, sources, targets)


def test_kernel_stack_of_one_row(monkeypatch):
    """CKA kernels formed one row at a time within blocks of 16 rows: same scores as the reference."""
    from brainalign.alignment import engine

    monkeypatch.setattr(engine._CKA, "STACK_BYTES", 1)
    sources, targets = dataset("clustered", N_BLOCKS)
    cka = [f"cka_{s}" for s in CKA_SIGMAS]
    got = score_matrices(sources, targets, cka, max_bytes=budget_for(16, sources, targets, cka))
    assert engine._CKA.stack_rows(len(sources) + len(targets), N_BLOCKS, 16, 4) == 1
    for name in cka:
        assert_close(f"{name} [stack of one row]", got[name], _block_reference("clustered", name))


def test_cka_only_job_is_one_pass():
    """Without neighbour metrics the engine streams the plane once."""
    sources, targets = dataset("readout", N_SMALL)
    stats = {}
    score_matrices(sources, targets, "cka", stats=stats)
    assert stats["passes"] == 1


@pytest.mark.parametrize("kind", list(DATASETS))
@pytest.mark.parametrize("max_bytes", [1, 2 * 2 * N_SMALL * N_SMALL * 8], ids=["chunk1", "chunk2"])
def test_cka_chunking(kind, max_bytes):
    """A tiny memory budget (1 or 2 kernels per chunk) changes nothing."""
    sources, targets = dataset(kind, N_SMALL)
    cka = tuple(f"cka_{s}" for s in CKA_SIGMAS)
    chunked = engine(kind, N_SMALL, cka, max_bytes)
    # float32 kernels: another chunking changes only the float32 rounding of partial sums
    default = engine(kind, N_SMALL, tuple(SMALL_METRICS))
    for name in cka:
        np.testing.assert_allclose(chunked[name], default[name], rtol=0, atol=1e-6, err_msg=name)
    for name in ("cka_12", "cka_52", "cka_100"):
        assert_close(f"{name} [{kind}, max_bytes={max_bytes}]", chunked[name], ref_matrix(name, sources, targets))


def test_single_source_many_targets():
    """Unbalanced job shapes (1 x 3 and 3 x 1) match the all-pairs matrix."""
    sources, targets = dataset("readout", N_SMALL)
    full = engine("readout", N_SMALL, tuple(SMALL_METRICS))
    one_src = score_matrices(sources[1:2], targets, SMALL_METRICS, max_bytes=1)
    one_tgt = score_matrices(sources, targets[2:3], SMALL_METRICS)
    for name in SMALL_METRICS:
        np.testing.assert_allclose(one_src[name], full[name][1:2], rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(one_tgt[name], full[name][:, 2:3], rtol=0, atol=1e-6, err_msg=name)


def test_a_constant_representation_scores_nan_and_leaves_the_others_unchanged():
    """A blank parcel or a dead layer (the same value for every stimulus) has nothing to align:
    its row or column is NaN, every other pair is what it is without it."""
    sources, targets = dataset("readout", N_SMALL)
    full = engine("readout", N_SMALL, tuple(SMALL_METRICS))
    blank = np.full_like(targets[0], 0.25)
    dead = np.zeros_like(sources[0])
    got = score_matrices([sources[0], dead, *sources[1:]], [*targets, blank], SMALL_METRICS)
    for name in SMALL_METRICS:
        assert np.isnan(got[name][1]).all() and np.isnan(got[name][:, -1]).all(), name
        rest = np.delete(np.delete(got[name], 1, axis=0), -1, axis=1)
        np.testing.assert_allclose(rest, full[name], rtol=0, atol=1e-6, err_msg=name)


# ----------------------------------------------------------------------------- 2. identical inputs


@functools.cache
def _wide(n):
    # low rank (3) in 300 columns: distances spread widely, so HSIC(K, K) >> 1e-6 even at sigma = 100
    # and CKA(X, X) = HSIC / (HSIC + 1e-6) is 1 to within 1e-5 (plain Gaussian noise is not enough)
    rng = np.random.default_rng(7)
    return rng.normal(size=(n, 3)) @ rng.normal(size=(3, 300)) + 0.1 * rng.normal(size=(n, 300))


def test_identical_inputs_small_n():
    """CKA and mutual k-NN are 1 on (X, X); CKNNA ~ 1; the reference agrees."""
    x = _wide(N_SMALL)
    got = score_matrices([x], [x.copy()], SMALL_METRICS)
    for name in SMALL_METRICS:
        if name.startswith(("cka_", "mutual_knn_")):
            assert abs(got[name][0, 0] - 1.0) <= ATOL, (name, got[name][0, 0])
            assert abs(ref_metric(name, x, x) - 1.0) <= ATOL, name
        elif name in CKNNA_K:
            assert abs(got[name][0, 0] - 1.0) <= 1e-4, (name, got[name][0, 0])


def test_identical_inputs_large_k():
    """Mutual k-NN at k >= 60 is 1 on (X, X); cycle k-NN matches the reference."""
    x = np.random.default_rng(8).normal(size=(N_LARGE, 6))
    got = score_matrices([x], [x], LARGE_METRICS)
    for name in LARGE_METRICS:
        if name.startswith("mutual_knn_"):
            assert got[name][0, 0] == pytest.approx(1.0, abs=ATOL), name
        else:
            assert got[name][0, 0] == pytest.approx(ref_metric(name, x, x), abs=ATOL), name


# ----------------------------------------------------------------------------- 3. errors


@pytest.mark.parametrize("name,k", [("mutual_knn_60", 60), ("mutual_knn_80", 80), ("cycle_knn_400", 400)])
def test_k_not_below_n_raises(name, k):
    """k >= n is a ValueError that names k and n."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(N_SMALL, 4)), rng.normal(size=(N_SMALL, 5))
    with pytest.raises(ValueError) as err:
        score_matrices([x], [y], [name])
    msg = str(err.value)
    assert re.search(rf"\bk\s*=\s*{k}\b", msg), msg
    assert re.search(rf"\bn\s*=\s*{N_SMALL}\b", msg), msg


@pytest.mark.parametrize("where", ["target", "second source", "second target"])
def test_mismatched_n_raises(where):
    """Representations with different numbers of stimuli are a ValueError."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(29, 4))
    sources, targets = {"target": ([a], [b]), "second source": ([a, b], [a]),
                        "second target": ([a], [a, b])}[where]
    with pytest.raises(ValueError, match="29"):
        score_matrices(sources, targets, ["cka_36", "mutual_knn_20"])
    with pytest.raises(ValueError):
        brainalign.align({f"s{i}": s for i, s in enumerate(sources)},
                         {f"t{i}": t for i, t in enumerate(targets)}, ["cka_36"])


# ----------------------------------------------------------------------------- 4. align


@pytest.mark.parametrize("as_torch", [False, True], ids=["numpy", "torch"])
def test_align_dataframe(as_torch):
    """align: columns [source, target, metric, score], one row per triple, reference values."""
    rng = np.random.default_rng(11)
    x1, x2 = rng.normal(size=(N_SMALL, 5)), rng.normal(size=(N_SMALL, 9))
    y1 = x1 @ rng.normal(size=(5, 7)) + 0.5 * rng.normal(size=(N_SMALL, 7))
    y2 = rng.normal(size=(N_SMALL, 4))
    conv = torch.from_numpy if as_torch else (lambda a: a)
    metrics = ["cka_36", "mutual_knn_20"]
    df = brainalign.align({"a": conv(x1), "b": conv(x2)}, {"r1": conv(y1), "r2": conv(y2)}, metrics)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["source", "target", "metric", "score"]
    assert len(df) == 2 * 2 * 2
    triples = set(zip(df.source, df.target, df.metric, strict=True))
    assert triples == {(s, t, m) for s in ("a", "b") for t in ("r1", "r2") for m in metrics}
    arrays = {"a": x1, "b": x2, "r1": y1, "r2": y2}
    for row in df.itertuples():
        want = ref_metric(row.metric, arrays[row.source], arrays[row.target])
        assert abs(row.score - want) <= ATOL, (row.source, row.target, row.metric, row.score, want)


def test_align_mixed_numpy_and_float32_torch():
    """A float32 torch tensor next to numpy arrays is scored like its float64 values."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(N_SMALL, 6)).astype(np.float32)
    y = rng.normal(size=(N_SMALL, 8))
    df = brainalign.align({"x": torch.from_numpy(x)}, {"y": y}, ["cka_36", "mutual_knn_20", "cknna"])
    for row in df.itertuples():
        assert abs(row.score - ref_metric(row.metric, x.astype(np.float64), y)) <= ATOL, row.metric


# ----------------------------------------------------------------------------- 5. ties


def _exact_ties(n, d, seed):
    """Columns of +-2^30 (8 each) and 0: z-scores are exactly 0 and +-2, so inner products are exact
    integers with many exact ties in every implementation."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d))
    for c in range(d):
        p = rng.permutation(n)
        x[p[:8], c], x[p[8:16], c] = 2.0**30, -(2.0**30)
    return x


def _duplicated_rows(n, d, copies, seed):
    """Each of n / copies Gaussian rows repeated ``copies`` times, shuffled."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n // copies, d))
    return base[rng.permutation(np.repeat(np.arange(n // copies), copies))]


TIE_DATA = {
    "exact_ints": lambda: ([_exact_ties(65, 6, 1), _exact_ties(65, 3, 2)],
                           [_exact_ties(65, 4, 3), _exact_ties(65, 5, 4)], 65),
    "duplicated_rows": lambda: ([_duplicated_rows(60, 4, 4, 5), _duplicated_rows(60, 9, 3, 6)],
                                [_duplicated_rows(60, 5, 4, 7), _duplicated_rows(60, 3, 5, 8)], 60),
    # n = 810 >= 2 k for k = 400 (at n = 402 every other stimulus would be a neighbour)
    "duplicated_rows_large": lambda: ([_duplicated_rows(810, 3, 6, 9)],
                                      [_duplicated_rows(810, 4, 3, 10), _duplicated_rows(810, 2, 2, 11)], 810),
}
NEIGHBOUR_METRICS = [m for m in ALL_METRICS if not m.startswith("cka_")]


def _tie_metrics(n):
    return [m for m in NEIGHBOUR_METRICS if metric_param(m) < n]


@pytest.mark.parametrize("kind", list(TIE_DATA))
def test_ties_lowest_index_first(kind):
    """Exactly tied inner products: neighbour metrics match the lowest-index-first reference."""
    sources, targets, n = TIE_DATA[kind]()
    if kind == "duplicated_rows_large":
        metrics = [m for m in NEIGHBOUR_METRICS if m.startswith(("mutual", "cycle")) and metric_param(m) >= 60]
    else:
        metrics = _tie_metrics(n)
    got = score_matrices(sources, targets, metrics)
    failures, sensitive = [], 0
    for name in metrics:
        want = ref_matrix(name, sources, targets)
        flipped = ref_matrix(name, sources, targets, lowest_first=False)
        if name in KNN_METRICS:  # counts, exactly: at n = 810, k = 400 one neighbour is 3e-6 of the score
            want, flipped, mine = (neighbour_count(name, a, n) for a in (want, flipped, got[name]))
            sensitive += int((want != flipped).any())
            bad = np.argwhere(mine != want)
        else:
            mine = got[name]
            sensitive += int(np.abs(want - flipped).max() > ATOL)
            bad = np.argwhere(np.abs(mine - want) > ATOL)
        failures += [f"{name}{tuple(b)}: engine {mine[tuple(b)]!r} vs reference {want[tuple(b)]!r}"
                     for b in bad]
    assert sensitive > 0, "test data does not exercise tie breaking"
    assert not failures, f"[{kind}] " + "; ".join(failures)


@pytest.mark.parametrize("kind", list(TIE_DATA))
def test_tie_data_really_ties(kind):
    """Sanity of the reference: its inner products are exactly tied where the maths says so."""
    sources, targets, _ = TIE_DATA[kind]()
    for x in sources + targets:
        z = ref_zscore(x)
        g = ref_gram(z)
        assert max(len(r) - len(np.unique(r)) for r in g) > 10
        if kind == "exact_ints":
            assert set(np.unique(z)) == {-2.0, 0.0, 2.0}
        else:
            _, group = np.unique(x, axis=0, return_inverse=True)
            group = group.ravel()
            for gid in range(group.max() + 1):
                cols = g[:, group == gid]
                assert (cols == cols[:, :1]).all()


@pytest.mark.parametrize("kind", ["exact_ints", "duplicated_rows"])
def test_repeat_calls_identical(kind):
    """Two calls on tied data give bit-identical results for all metrics."""
    sources, targets, n = TIE_DATA[kind]()
    metrics = [m for m in ALL_METRICS if m.startswith("cka_") or metric_param(m) < n]
    first = score_matrices(sources, targets, metrics)
    second = score_matrices([s.copy() for s in sources], [t.copy() for t in targets], metrics)
    assert list(first) == list(second) == metrics
    for name in metrics:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


# ----------------------------------------------------------------------------- 6. name resolution


def test_resolve_all():
    names = [s.name for s in resolve_metrics("all")]
    assert names == ALL_METRICS and len(names) == 27 == len(set(names))
    assert len(CKA_SIGMAS) + len(CKNNA_K) + len(MUTUAL_KNN_K) + len(CYCLE_KNN_K) == 27


@pytest.mark.parametrize("family,count", [("cka", 12), ("mutual_knn", 6), ("cycle_knn", 6)])
def test_resolve_family(family, count):
    specs = resolve_metrics(family)
    assert len(specs) == count
    assert all(s.family == family for s in specs)


def test_family_name_in_score_matrices():
    """'cka' through the public function gives the 12 CKA matrices."""
    sources, targets = dataset("gaussian", N_SMALL)
    got = score_matrices(sources[:1], targets[:1], "cka")
    assert list(got) == [f"cka_{s}" for s in CKA_SIGMAS] and len(got) == 12


def test_resolve_dedup_and_order():
    names = [s.name for s in resolve_metrics(["mutual_knn_20", "cka_36", "mutual_knn"])]
    assert names[:2] == ["mutual_knn_20", "cka_36"] and len(names) == len(set(names)) == 7


@pytest.mark.parametrize("bad", ["cka_13", "knn", "CKA_12"])
def test_unknown_metric_raises(bad):
    """An unknown name is a ValueError that names it."""
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        resolve_metrics(["cka_12", bad])
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=re.escape(bad)):
        brainalign.align({"x": x}, {"y": x}, [bad])


def test_glob_patterns_select_families():
    from brainalign.alignment.metrics import resolve_metrics

    assert [s.name for s in resolve_metrics("cknna*")] == ["cknna", "cknna_10", "cknna_50"]
    assert len(resolve_metrics(["cka_*", "cycle_knn_4*"])) == 12 + 2
    with pytest.raises(ValueError, match="zz_\\*"):
        resolve_metrics("zz_*")


# ----------------------------------------------------------------------------- 7. storage and blocks, observed


class EngineLog:
    """What the engine really does, recorded by wrapping the functions it streams through (no engine
    code is needed for this): the CKA buffers it allocates, every kernel-block product, and every row
    block handed to the neighbour search and to the neighbour metrics."""

    def __init__(self, monkeypatch):
        from brainalign.alignment import engine as eng

        self.cka, self.products, self.cka_blocks, self.source_blocks, self.neighbours = [], [], [], [], []
        init, block, products, source_block, neighbours = (eng._CKA.__init__, eng._CKA.block, eng.inner_products,
                                                           eng._source_block, eng.block_neighbours)

        def cka_init(obj, *args, **kwargs):
            init(obj, *args, **kwargs)
            self.cka.append({part: (getattr(obj, part).dtype, tuple(getattr(obj, part).shape))
                             for part in ("d2", "kern", "rowsum", "a")})

        def cka_block(obj, r0, r1, clock):
            self.cka_blocks.append((r0, r1))
            return block(obj, r0, r1, clock)

        def inner(a, b):
            self.products.append((a.dtype, b.dtype, tuple(a.shape), tuple(b.shape)))
            return products(a, b)

        def source(s, g, lists_block, inv, r0, r1, *rest):
            self.source_blocks.append((s, r0, r1))
            return source_block(s, g, lists_block, inv, r0, r1, *rest)

        def search(g, r0, k, scale, shift):
            self.neighbours.append((r0, r0 + g.shape[0], k))
            return neighbours(g, r0, k, scale, shift)

        monkeypatch.setattr(eng._CKA, "__init__", cka_init)
        monkeypatch.setattr(eng._CKA, "block", cka_block)
        monkeypatch.setattr(eng, "inner_products", inner)
        monkeypatch.setattr(eng, "_source_block", source)
        monkeypatch.setattr(eng, "block_neighbours", search)


def expected_blocks(n, max_bytes, fixed, per_row):
    """The documented rule (score_matrices): b = (max_bytes - fixed) // per-row rows, at least 1, at most n;
    blocks [0, b), [b, 2b), ..., the last one shorter."""
    b = max(1, min(n, (max_bytes - fixed) // per_row))
    return b, [(r0, min(n, r0 + b)) for r0 in range(0, n, b)]


BLOCK_METRICS = ["cka_36", "cka_100", "cknna", "cknna_10", "mutual_knn_20", "mutual_knn_40", "cycle_knn_40"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("budget", ["one_byte", "13_rows", "13_rows_and_a_bit", "ample"])
def test_row_blocks_follow_max_bytes(monkeypatch, budget, dtype):
    """The row blocks the engine really streams (every CKA kernel block, every neighbour search, every
    source's neighbour metrics) are the ones max_bytes gives by the documented rule, the CKA buffers
    it allocates hold b rows in the storage dtype, and the scores are the reference's."""
    from brainalign.alignment.engine import Plan, memory_plan

    sources, targets = dataset("readout", N_BLOCKS)
    n, S, T = N_BLOCKS, len(sources), len(targets)
    fixed, per_row = memory_plan(n, S, T, Plan.of(resolve_metrics(BLOCK_METRICS)), np.dtype(dtype).itemsize)
    max_bytes = {"one_byte": 1, "13_rows": fixed + 13 * per_row, "13_rows_and_a_bit": fixed + 14 * per_row - 1,
                 "ample": 1 << 40}[budget]
    b, blocks = expected_blocks(n, max_bytes, fixed, per_row)
    assert len(blocks) == {"one_byte": n, "13_rows": 6, "13_rows_and_a_bit": 6, "ample": 1}[budget]

    log = EngineLog(monkeypatch)
    got = score_matrices(sources, targets, BLOCK_METRICS, max_bytes=max_bytes, dtype=dtype)
    assert log.cka_blocks == blocks, f"CKA row blocks {log.cka_blocks} != {blocks} (max_bytes = {max_bytes})"
    assert log.source_blocks == [(s, r0, r1) for r0, r1 in blocks for s in range(S)], log.source_blocks
    # pass 1: every source's lists (k_max = 40), every target's (CKNNA's k = 12); pass 2: the targets' k_max
    want = ([(r0, r1, k) for r0, r1 in blocks for k in [40] * S + [12] * T]
            + [(r0, r1, 40) for r0, r1 in blocks for _ in range(T)])
    assert log.neighbours == want, f"neighbour searches {log.neighbours} != {want}"
    store = getattr(torch, dtype)
    (cka,) = log.cka
    assert cka["d2"] == (store, (S + T, b, n)), cka
    assert all(dt == store for part, (dt, _) in cka.items() if part != "rowsum"), cka
    assert cka["rowsum"][0] == torch.float64, cka  # row sums gather many blocks' column sums
    # one kernel product per block and sigma (the stack holds a whole block here), made in the storage dtype,
    # over the block's columns from its first row on (the upper triangle); no other product (mutual_knn's
    # counts are read off the neighbour ranks)
    # (and, but for the last block, the square [r0, r1) x [r0, r1) once more: sums over the plane are twice the
    # block's less the square)
    per_block = [[(S, (r1 - r0) * (n - r0))] + ([(S, (r1 - r0) ** 2)] if r1 < n else []) for r0, r1 in blocks]
    assert [(a, c) for a, c, _, _ in log.products] == [(store, store)] * (2 * sum(map(len, per_block)))
    assert [sa for _, _, sa, _ in log.products] == [p for parts in per_block for _ in range(2) for p in parts]
    for name in BLOCK_METRICS:
        want = _block_reference("readout", name)
        # float32 storage is the CKA kernels only: the neighbour metrics and CKNNA are float64 sums throughout
        atol = ATOL if dtype == "float32" and name.startswith("cka_") else 1e-10
        assert_close(f"{name} [{dtype}, {budget}]", got[name], want, atol=atol)


@pytest.mark.parametrize("kind", ["gaussian", "readout", "clustered"])
def test_storage_dtype_is_what_the_kernels_are_made_of(monkeypatch, kind):
    """dtype='float64': every kernel buffer and block product is float64 and every variant matches the
    float64 reference to 1e-10; dtype='float32' (the default): they are float32, the scores agree within
    1e-5 and CKA visibly differs from the reference (> 1e-9), as float32 blocks must."""
    sources, targets = dataset(kind, N_BLOCKS)
    out = {}
    for dtype in ("float64", "float32", None):
        log = EngineLog(monkeypatch)
        out[dtype] = score_matrices(sources, targets, SMALL_METRICS, dtype=dtype,
                                    max_bytes=budget_for(9, sources, targets, SMALL_METRICS, dtype or "float32"))
        (cka,) = log.cka
        assert cka["rowsum"][0] == torch.float64  # (whatever the storage)
        seen = {dt for part, (dt, _) in cka.items() if part != "rowsum"} | {dt for p in log.products for dt in p[:2]}
        assert seen == {torch.float64 if dtype == "float64" else torch.float32}, (dtype, cka)
        assert log.cka_blocks == [(r0, min(N_BLOCKS, r0 + 9)) for r0 in range(0, N_BLOCKS, 9)], log.cka_blocks
    worst32 = 0.0
    for name in SMALL_METRICS:
        want = _block_reference(kind, name)
        assert_close(f"{name} [{kind}, float64]", out["float64"][name], want, atol=1e-10)
        np.testing.assert_allclose(out["float32"][name], out["float64"][name], atol=1e-5, rtol=0, err_msg=name)
        np.testing.assert_array_equal(out[None][name], out["float32"][name], err_msg=name)
        if name.startswith("cka_"):
            worst32 = max(worst32, np.abs(out["float32"][name] - want).max())
    assert worst32 > 1e-9, "float32 blocks agree with the float64 reference to the last bit: is dtype ignored?"


def test_memory_follows_the_budget(tmp_path):
    """n = 2,500, 8 layers, in a fresh process: peak RSS <= the process before the job (interpreter,
    torch (~0.5 GB for its CUDA build alone) and the input arrays) + max_bytes (384 MiB) + the z-scored
    float64 features + 0.1 GB, while one block holding every row would need over twice the budget."""
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import json, numpy as np, torch\n"
        "from brainalign.alignment.metrics import score_matrices\n"
        "n = 2500\n"
        "rng = np.random.default_rng(0)\n"
        "latent = rng.normal(size=(n, 16)).astype(np.float32)\n"
        "layers = [(latent @ rng.normal(size=(16, 96)) + rng.normal(size=(n, 96))).astype(np.float32)"
        " for _ in range(8)]\n"
        "rois = [(latent @ rng.normal(size=(16, 60)) + rng.normal(size=(n, 60))).astype(np.float32)"
        " for _ in range(6)]\n"
        "features = sum(x.size for x in layers + rois) * 8\n"
        # VmHWM: this process's own peak (ru_maxrss would include the pytest parent's RSS at fork)
        "def hwm(): return int([x.split()[1] for x in open('/proc/self/status') if x.startswith('VmHWM')][0]) * 1024\n"
        "before = hwm()\n"
        "stats = {}\n"
        "score_matrices(layers, rois, 'all', max_bytes=384 << 20, stats=stats)\n"
        "print(json.dumps({'peak': hwm(),"
        " 'before': before, 'features': features, 'stats': stats}))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    res = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    st = res["stats"]
    assert st["blocks"] > 1 and st["fixed_bytes"] + 2500 * st["bytes_per_row"] > 2 * (384 << 20), st
    limit = res["before"] + (384 << 20) + res["features"] + 0.1e9
    assert res["peak"] <= limit, f"peak RSS {res['peak'] / 1e9:.2f} GB > {limit / 1e9:.2f} GB ({st})"


def test_sources_streamed_in_groups_give_the_same_scores(monkeypatch):
    """Sources whose z-scores exceed the budget are z-scored and streamed group by group; every
    metric family equals the one-group run, and a constant layer in a later group is still NaN at
    its own row."""
    import brainalign.alignment.engine as engine

    rng = np.random.default_rng(3)
    n = 90
    latent = rng.normal(size=(n, 6))
    d = 1500
    layers = [latent @ rng.normal(size=(6, d)) + rng.normal(size=(n, d)) for _ in range(7)]
    layers[5] = np.ones((n, d))  # a dead layer, in the third group
    rois = [latent @ rng.normal(size=(6, 12)) + rng.normal(size=(n, 12)) for _ in range(4)]
    metrics = ["cka_36", "cka_12", "mutual_knn_20", "cycle_knn_40", "cknna_10", "linear_cka", "rsa_pearson",
               "rsa_spearman", "ridge"]
    live = layers[:5] + layers[6:]  # RSA's correlation distance is undefined for a constant layer
    whole, grouped = {}, {}
    # the reference: one group of sources, in blocks of many rows (a budget above the job's fixed need)
    one = score_matrices(live, rois, metrics, max_bytes=256 << 20, stats=whole)
    one_dead = score_matrices(layers, rois, metrics[:5], max_bytes=256 << 20)
    monkeypatch.setattr(engine, "MIN_GROUP_BYTES", 8 * n * d)  # a layer's z-scores (1.08 MB)
    budget = 6_000_000  # groups of 2 layers (<= 3 MB), each group's passes within the other 3 MB
    assert engine.source_groups([d] * 7, n, budget)[0] == [[0, 1], [2, 3], [4, 5], [6]]
    many = score_matrices(live, rois, metrics, max_bytes=budget, stats=grouped)
    many_dead = score_matrices(layers, rois, metrics[:5], max_bytes=budget)
    assert (whole["source_groups"], grouped["source_groups"]) == (1, 3) and whole["block_rows"] == n
    # the kernel metrics to the float32 blocks' tolerance (other blocks and groups: other rounding of their sums),
    # the neighbour metrics exactly (their tie rule)
    for name in metrics:
        np.testing.assert_allclose(many[name], one[name], rtol=5e-6, atol=1e-9, err_msg=name)
        if name.startswith(("mutual_knn", "cycle_knn")):
            np.testing.assert_array_equal(many[name], one[name], err_msg=name)
    for name in metrics[:5]:
        np.testing.assert_allclose(many_dead[name], one_dead[name], rtol=5e-6, atol=1e-9, err_msg=name)
        assert np.isnan(many_dead[name][5]).all() and np.isfinite(np.delete(many_dead[name], 5, axis=0)).all()


def test_source_groups_rule():
    from brainalign.alignment.engine import MIN_GROUP_BYTES, source_groups

    n = 1000
    per = MIN_GROUP_BYTES // (8 * n) // 4  # a width whose z-scores are a quarter of the smallest group
    assert source_groups([per] * 8, n, 1 << 20) == ([list(range(8))], 1 << 20)  # 2 groups' worth: kept whole
    groups, work = source_groups([per] * 20, n, 1 << 20)  # a small budget: groups of the smallest size
    assert groups == [list(range(i, min(i + 4, 20))) for i in range(0, 20, 4)] and work == 1
    big = 16 * MIN_GROUP_BYTES
    groups, work = source_groups([per] * 32, n, big)  # fits half the budget: one group, the whole budget
    assert groups == [list(range(32))] and work == big
    assert len(source_groups([per] * 33, n, big)[0]) == 2
    groups, work = source_groups([per * 16] * 12, n, big)  # a smallest group each: half the budget a group
    assert [len(g) for g in groups] == [2] * 6 and work == big - big // 2
    assert source_groups([None, per], n, 1)[0] == [[0, 1]]  # an unknown width: today's single group


def test_depth_streaming_holds_the_budget(tmp_path):
    """40 layers of 2,048 at n = 1,000 (655 MB of float64 z-scores) under a 384 MiB budget, in a
    fresh process, read through loaders as the align job does: 3 groups, peak RSS <= the process
    before the job (interpreter, torch, the inputs) + the budget + the targets' z-scores + 0.15 GB,
    where one group would hold 655 MB of z-scores beyond the budget."""
    import json
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import json, h5py, numpy as np, torch\n"
        "from brainalign.io import h5_loader\n"
        "from brainalign.alignment.metrics import score_matrices\n"
        "n, rng = 1000, np.random.default_rng(0)\n"
        "latent = rng.normal(size=(n, 16)).astype(np.float32)\n"
        f"path = {str(tmp_path / 'f.h5')!r}\n"
        "with h5py.File(path, 'w') as f:\n"
        "    for i in range(40):\n"
        "        f[f'l{i}'] = (latent @ rng.normal(size=(16, 2048)) + rng.normal(size=(n, 2048))).astype(np.float16)\n"
        "rois = [(latent @ rng.normal(size=(16, 60)) + rng.normal(size=(n, 60))).astype(np.float32)"
        " for _ in range(6)]\n"
        "layers = [h5_loader(path, f'l{i}', np.float32) for i in range(40)]\n"
        "def hwm(): return int([x.split()[1] for x in open('/proc/self/status') if x.startswith('VmHWM')][0]) * 1024\n"
        "before, stats = hwm(), {}\n"
        "score_matrices(layers, rois, ['cka_36', 'mutual_knn_20', 'linear_cka'], max_bytes=384 << 20, stats=stats)\n"
        "print(json.dumps({'peak': hwm(), 'before': before, 'targets': 6 * 60 * n * 8, 'stats': stats}))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["stats"]["source_groups"] == 3, res["stats"]
    limit = res["before"] + (384 << 20) + res["targets"] + 0.15e9
    assert res["peak"] <= limit, f"peak RSS {res['peak'] / 1e9:.2f} GB > {limit / 1e9:.2f} GB"


def test_fit_metrics_leaves_out_what_the_stimuli_cannot_define():
    from brainalign.alignment.metrics import ALL_METRICS, fit_metrics
    from brainalign.io import InputError

    kept, dropped = fit_metrics("all", 200)
    assert dropped == ["mutual_knn_200", "mutual_knn_400", "cycle_knn_200", "cycle_knn_400"]
    assert kept == [m for m in ALL_METRICS if m not in dropped]
    assert fit_metrics("all", 401) == (ALL_METRICS, [])
    kept, dropped = fit_metrics(["cka", "mutual_knn"], 50)  # a family is not an explicit variant
    assert dropped == [f"mutual_knn_{k}" for k in (60, 80, 200, 400)] and "mutual_knn_40" in kept
    with pytest.raises(InputError, match="mutual_knn_400 needs more than 400 stimuli; subj01 has 300"):
        fit_metrics(["cka_36", "mutual_knn_400"], 300, "subj01")
