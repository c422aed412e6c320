"""The sources' neighbour metrics of one row block in compiled passes over the targets' lists (CPU).

For block row i, target t and rank p of t's list of i (j = that neighbour), with ``rx`` the rank of
j in the source's list of i and ``rt`` the rank of i in the source's list of j (``BIG`` when absent):

* mutual_k counts the (i, p) with ``max(p, rx) < k`` (:func:`rank_counts`);
* cycle_k counts the rows i whose ``min_p max(p, rt) < k`` (:func:`rank_counts`);
* CKNNA's four cross sums per k (:func:`cknna_sums`) read the source's Gram values at the same entries.

:func:`brainalign.alignment.engine._source_block` computes the same with torch gathers on any device (the
reference: ``tests/test_metrics.py`` and ``tests/test_summary.py`` check that both give the same integers
and sums). The kernels read each list entry once, a row at a time (its ranks and Gram values stay in
cache), and write no (rows, targets, k) temporaries: on 2 cores, for a row block of 181 rows against 180
ROIs at n = 4,000, ~22 ms for the counts and ~13 ms for CKNNA's sums against ~48 ms and ~105 ms for the
gathers. The engine uses them for blocks of >= 2^21 list entries (the paper's size: 63 x 180 x 400); numba
compiles them on first use and caches them beside the package where it may (:func:`available` says whether
they can run here).
"""

from __future__ import annotations

import functools

import numpy as np


def _numba():
    import os

    # (numba rereads its settings from the environment: an attribute set on numba.config does not hold)
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")  # see numba_threads
    import numba

    return numba


@functools.cache
def _kernel():
    numba = _numba()

    @numba.njit(parallel=True, cache=True, nogil=True)
    def counts(flat, fwd, back, n_targets, k, mutual_ks, cycle_ks):  # pragma: no cover - compiled
        b = flat.shape[0]
        nm, nc = mutual_ks.shape[0], cycle_ks.shape[0]
        mut = np.zeros((b, n_targets, max(nm, 1)), np.int32)
        cyc = np.zeros((b, n_targets), np.int32)
        top = 0
        for q in range(nm):
            top = max(top, mutual_ks[q])
        for i in numba.prange(b):
            fr, br, fl = fwd[i], back[i], flat[i]
            ranks = np.empty(max(top, 1), np.int16)
            for t in range(n_targets):
                base = t * k
                # mutual_k: how many of the target's first k have a rank below k in the source's list. The
                # ranks are gathered once into a row of their own; the count per k over it is branch-free
                # and vectorised (cheaper than a gather per k, or one pass with a histogram of max(p, rank))
                for p in range(top):
                    ranks[p] = fr[fl[base + p]]
                for q in range(nm):
                    kq = mutual_ks[q]
                    c = 0
                    for p in range(kq):
                        c += ranks[p] < kq
                    mut[i, t, q] = c
                if nc:  # min over p of max(p, rank of i in the source's list of j): no p beyond it can lower it
                    first = 1 << 30
                    for p in range(k):
                        if p >= first:
                            break
                        first = min(first, max(p, np.int64(br[fl[base + p]])))
                    cyc[i, t] = first
        mutual = np.zeros((n_targets, nm), np.int64)
        for i in range(b):
            for t in range(n_targets):
                for q in range(nm):
                    mutual[t, q] += mut[i, t, q]
        cycle = np.zeros((n_targets, nc), np.int64)
        for t in range(n_targets):
            for q in range(nc):
                for i in range(b):
                    if cyc[i, t] < cycle_ks[q]:
                        cycle[t, q] += 1
        return mutual, cycle

    return counts


@functools.cache
def _cknna_kernel():
    numba = _numba()

    @numba.njit(parallel=True, cache=True, nogil=True)
    def sums(flat, back_t, vals, fwd, back, g, slots, e_col, e_rank, ks, chunks, sv, r0):  # pragma: no cover
        b, n_targets, kc = vals.shape
        nq = ks.shape[0]
        top = ks.max()
        own = sv.shape[0] > 1  # the source's kernel from its values at its own lists, not its Gram rows
        out = np.zeros((chunks, n_targets, 4, nq))
        step = (b + chunks - 1) // chunks
        # rows outer: a row's ranks and Gram values stay in cache while every target reads them
        for c in numba.prange(chunks):
            acc = out[c]
            col = np.zeros(nq)
            lrow = np.zeros(nq)
            for i in range(c * step, min(b, (c + 1) * step)):
                fr, br = fwd[i], back[i]
                gr = g[0] if own else g[i]
                svr = sv[r0 + i] if own else sv[0]
                for t in range(n_targets):
                    # sum over x of K_ix M_xi M~_xi: the target's inverse entries of row i (x holds i
                    # among its first k in the target's list) that hold it in the source's as well
                    col[:] = 0.0
                    s = t * b + i
                    for e in range(slots[s], slots[s + 1]):
                        x = e_col[e]
                        worst = max(np.int64(br[x]), np.int64(e_rank[e]))
                        if worst < top:
                            kv = sv[x, br[x]] if own else gr[x]  # K_ix = K_xi, i at rank br[x] of x's list
                            for q in range(nq):
                                if worst < ks[q]:
                                    col[q] += kv
                    lrow[:] = 0.0
                    base = t * kc
                    for p in range(kc):
                        j = flat[i, base + p]
                        m = max(p, np.int64(fr[j]))  # M_ij = [p < k][rank of j in the source's list of i < k]
                        if m >= top:
                            continue
                        # M_ji as well: i among the first k of j in both lists
                        m2 = max(m, np.int64(br[j]), np.int64(back_t[i, t, p]))
                        kv = svr[fr[j]] if own else gr[j]
                        lv = vals[i, t, p]
                        for q in range(nq):
                            if m < ks[q]:
                                acc[t, 1, q] += kv
                                acc[t, 2, q] += lv
                                lrow[q] += lv
                                if m2 < ks[q]:
                                    acc[t, 0, q] += kv * lv
                    for q in range(nq):
                        acc[t, 3, q] += col[q] * lrow[q]
        return out.sum(0)

    return sums


def cknna_sums(flat, back_t, vals, fwd, back, g, slots, e_col, e_rank, ks, src_vals=None,
               r0: int = 0) -> np.ndarray:
    """CKNNA's four cross sums of one source against every target on a row block, one pass over the lists.

    ``flat`` (b, n_targets * kc): each target's CKNNA list of each block row; ``back_t`` (b, n_targets, kc)
    int16: the rank of the row in the target's list of that neighbour; ``vals`` (b, n_targets, kc)
    float64: the target's kernel there; ``fwd``, ``back`` (b, n) int16 and ``g`` (b, n) float64: the
    source's dense ranks, inverse ranks and Gram rows; ``e_col``, ``e_rank``: the targets' inverse entries
    of the block rows (the stimulus x whose list holds the row, the row's rank there), target by target
    and row by row, target t's of row i at ``slots[t b + i]:slots[t b + i + 1]``. With ``g`` None,
    the source's kernel comes from ``src_vals`` (n, kc) float64, its Gram values at each stimulus' first kc
    neighbours (every entry that the masks keep is among them), the block's rows from ``r0``. Returns
    (n_targets, 4, len(ks)): for each k, sum K L M M', sum K M, sum L M and sum_j col_j row_j (see
    :func:`brainalign.alignment.engine._source_block`, which computes the same with torch gathers)."""
    threads = numba_threads()
    dummy = np.zeros((1, 1))
    if g is None:
        g, src_vals = dummy, np.ascontiguousarray(src_vals, np.float64)
        if src_vals.shape[0] < 2:  # (a one-stimulus array would read as the dummy)
            raise ValueError("src_vals needs at least 2 stimuli")
    else:
        src_vals = dummy
    return _cknna_kernel()(np.ascontiguousarray(flat), np.ascontiguousarray(back_t), np.ascontiguousarray(vals),
                           np.ascontiguousarray(fwd), np.ascontiguousarray(back), np.ascontiguousarray(g),
                           np.ascontiguousarray(slots), np.ascontiguousarray(e_col),
                           np.ascontiguousarray(e_rank), np.asarray(ks, np.int64), min(len(vals), 4 * threads),
                           src_vals, int(r0))


@functools.cache
def available() -> bool:
    """Whether the compiled kernel runs here (numba importable and compiling)."""
    try:
        rank_counts(np.zeros((1, 2), np.int64), np.zeros((1, 3), np.int16), np.zeros((1, 3), np.int16), 1, 2,
                    [1], [1])
    except Exception:  # noqa: BLE001 - any failure means: use the torch path
        return False
    return True


def rank_counts(flat, fwd, back, n_targets: int, k: int, mutual_ks, cycle_ks) -> tuple[np.ndarray, np.ndarray]:
    """Per target, mutual_knn's count at each of ``mutual_ks`` and cycle_knn's at each of ``cycle_ks``.

    ``flat`` (b, n_targets * k), any integer dtype: each target's list of each block row, k entries per target;
    ``fwd``, ``back`` (b, n) int16: the source's dense ranks (:func:`engine.dense_ranks`) and inverse ranks
    (:func:`engine.dense_inverse_ranks`) of the block rows (either may be None when its family is not
    asked for). Returns (n_targets, len(mutual_ks)) and (n_targets, len(cycle_ks)) int arrays."""
    flat = np.ascontiguousarray(flat)
    b = flat.shape[0]
    empty = np.zeros((b, 1), np.int16)
    fwd = empty if fwd is None else np.ascontiguousarray(fwd)
    back = empty if back is None else np.ascontiguousarray(back)
    numba_threads()
    return _kernel()(flat, fwd, back, int(n_targets), int(k), np.asarray(mutual_ks, np.int64),
                     np.asarray(cycle_ks, np.int64))


def numba_threads() -> int:
    """numba's threads: torch's count (what the job was given), within numba's pool.

    numba's pool is its simple 'workqueue' unless the environment names another: the threads of its
    OpenMP pool spin-wait after each kernel, on the cores torch's OpenMP threads then need."""
    numba = _numba()
    import torch

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads
