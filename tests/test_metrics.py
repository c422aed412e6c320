"""The 27 metric variants of ``brainalign.metrics`` against a slow, obvious float64 numpy reference.

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
from brainalign.metrics import (
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
    """A mutual / cycle k-NN score as the integer it counts: matches (n k scale) or stimuli (n)."""
    scale = n * metric_param(name) if name.startswith("mutual_knn_") else n
    return np.rint(np.asarray(score) * scale).astype(np.int64)


@functools.cache
def _large_reference(kind):
    sources, targets = dataset(kind, N_LARGE)
    sources, targets = sources[:2], targets[:2]
    return sources, targets, {name: ref_matrix(name, sources, targets) for name in LARGE_METRICS}


@pytest.mark.parametrize("kind", list(DATASETS))
def test_large_k_matches_reference(kind):
    """The neighbour variants with k >= 60 at n = 1,000 (n >= 2 k), as exact integer counts,
    in one block and in blocks of 97 rows (which do not divide n)."""
    sources, targets, want = _large_reference(kind)
    for rows in (N_LARGE, 97):
        stats = {}
        got = score_matrices(sources, targets, LARGE_METRICS, max_bytes=budget_for(rows, sources, targets,
                                                                                  LARGE_METRICS), stats=stats)
        assert stats["block_rows"] == rows and stats["blocks"] == -(-N_LARGE // rows)
        for name in LARGE_METRICS:
            np.testing.assert_array_equal(neighbour_count(name, got[name], N_LARGE),
                                          neighbour_count(name, want[name], N_LARGE),
                                          err_msg=f"{name} [{kind}, blocks of {rows}]")
    # mutual k-NN is not trivially full at n = 2.5 k (cycle k-NN at k = 400 may well be)
    assert all(want[name].min() < 0.99 for name in LARGE_METRICS if name.startswith("mutual_knn_"))


def budget_for(rows, sources, targets, metrics, dtype="float32"):
    """The max_bytes that makes the engine run blocks of exactly ``rows`` rows."""
    from brainalign.engine import Plan, memory_plan

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
    from brainalign import engine

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
    "duplicated_rows_large": lambda: ([_duplicated_rows(402, 3, 6, 9)],
                                      [_duplicated_rows(402, 4, 3, 10), _duplicated_rows(402, 2, 2, 11)], 402),
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
        sensitive += int(np.abs(want - flipped).max() > ATOL)
        bad = np.argwhere(np.abs(got[name] - want) > ATOL)
        failures += [f"{name}{tuple(b)}: engine {got[name][tuple(b)]!r} vs reference {want[tuple(b)]!r}"
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
    from brainalign.metrics import resolve_metrics

    assert [s.name for s in resolve_metrics("cknna*")] == ["cknna", "cknna_10", "cknna_50"]
    assert len(resolve_metrics(["cka_*", "cycle_knn_4*"])) == 12 + 2
    with pytest.raises(ValueError, match="zz_\\*"):
        resolve_metrics("zz_*")


@pytest.mark.parametrize("kind", ["gaussian", "readout", "clustered"])
def test_float32_storage_agrees_with_float64(kind):
    """float32 kernel blocks (sums in float64) agree with float64 blocks within 1e-5 for every variant;
    the float64 path matches the reference to 1e-9 on CKA, which float32 blocks cannot."""
    sources, targets = dataset(kind, N_BLOCKS)
    s64, s32 = {}, {}
    f64 = score_matrices(sources, targets, ALL_METRICS[:12] + SMALL_METRICS[12:], dtype="float64", stats=s64)
    f32 = score_matrices(sources, targets, ALL_METRICS[:12] + SMALL_METRICS[12:], dtype="float32", stats=s32,
                         max_bytes=budget_for(9, sources, targets, SMALL_METRICS))
    assert (s64["dtype"], s32["dtype"]) == ("float64", "float32") and s32["blocks"] == -(-N_BLOCKS // 9)
    worst32 = 0.0
    for name in f64:
        np.testing.assert_allclose(f32[name], f64[name], atol=1e-5, rtol=0, err_msg=name)
        if name.startswith("cka_"):
            want = _block_reference(kind, name)
            assert np.abs(f64[name] - want).max() < 1e-9, name
            worst32 = max(worst32, np.abs(f32[name] - want).max())
    assert worst32 > 1e-9, "float32 blocks agree with float64 to the last bit: is dtype ignored?"


def test_memory_follows_the_budget(tmp_path):
    """n = 4,000, 48 layers, in a fresh process: peak RSS <= the process before the job (interpreter,
    torch (~0.5 GB for its CUDA build alone) and the input arrays) + max_bytes (2 GiB) + the z-scored
    float64 features + 0.1 GB, while one block holding every row would need over twice the budget."""
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import json, numpy as np, torch\n"
        "from brainalign.metrics import score_matrices\n"
        "n = 4000\n"
        "rng = np.random.default_rng(0)\n"
        "latent = rng.normal(size=(n, 16)).astype(np.float32)\n"
        "layers = [(latent @ rng.normal(size=(16, 96)) + rng.normal(size=(n, 96))).astype(np.float32)"
        " for _ in range(48)]\n"
        "rois = [(latent @ rng.normal(size=(16, 60)) + rng.normal(size=(n, 60))).astype(np.float32)"
        " for _ in range(6)]\n"
        "features = sum(x.size for x in layers + rois) * 8\n"
        # VmHWM: this process's own peak (ru_maxrss would include the pytest parent's RSS at fork)
        "def hwm(): return int([x.split()[1] for x in open('/proc/self/status') if x.startswith('VmHWM')][0]) * 1024\n"
        "before = hwm()\n"
        "stats = {}\n"
        "score_matrices(layers, rois, 'all', max_bytes=2 << 30, stats=stats)\n"
        "print(json.dumps({'peak': hwm(),"
        " 'before': before, 'features': features, 'stats': stats}))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    res = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    st = res["stats"]
    assert st["blocks"] > 1 and st["fixed_bytes"] + 4000 * st["bytes_per_row"] > 2 * (2 << 30), st
    limit = res["before"] + (2 << 30) + res["features"] + 0.1e9
    assert res["peak"] <= limit, f"peak RSS {res['peak'] / 1e9:.2f} GB > {limit / 1e9:.2f} GB ({st})"
