"""mutual_knn and cycle_knn counts of one row block in a single pass over the targets' lists (CPU).

For block row i, target t and rank p of t's list of i (j = that neighbour), with ``rx`` the rank of
j in the source's list of i and ``rt`` the rank of i in the source's list of j (``BIG`` when absent):

* mutual_k counts the (i, p) with ``max(p, rx) < k``;
* cycle_k counts the rows i whose ``min_p max(p, rt) < k``.

:func:`brainalign.alignment.engine._source_block` computes the same counts with torch gathers on any
device (the reference: ``tests/test_metrics.py`` checks that both give the same integers); on the CPU
this kernel reads each list entry once and writes no (rows, targets, k) temporaries (at the paper's
size ~10 ms a row block and layer against ~12 ms for the gathers, measured on 2 cores; the engine uses
it only for blocks of >= 2^21 list entries). numba compiles it on first use and
caches it beside the package where it may (:func:`available` says whether it can run here).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _kernel():
    import numba

    @numba.njit(parallel=True, cache=True, nogil=True)
    def counts(flat, fwd, back, n_targets, k, mutual_ks, cycle_ks):  # pragma: no cover - compiled
        b = flat.shape[0]
        nm, nc = mutual_ks.shape[0], cycle_ks.shape[0]
        mut = np.zeros((b, n_targets, nm + 1), np.int32)  # per row: how many m fall below each k, not cumulated
        cyc = np.zeros((b, n_targets), np.int32)
        top = mutual_ks[nm - 1] if nm else 0
        for i in numba.prange(b):
            for t in range(n_targets):
                base = t * k
                first = 1 << 30
                for p in range(k):
                    j = flat[i, base + p]
                    if nm and p < top:
                        m = max(p, np.int64(fwd[i, j]))
                        if m < top:  # the smallest q with m < ks[q]: counted at that k and every larger one
                            q = 0
                            while m >= mutual_ks[q]:
                                q += 1
                            mut[i, t, q] += 1
                    if nc:
                        c = max(p, np.int64(back[i, j]))
                        if c < first:
                            first = c
                cyc[i, t] = first
        mutual = np.zeros((n_targets, nm), np.int64)
        for t in range(n_targets):
            run = 0
            for q in range(nm):
                for i in range(b):
                    run += mut[i, t, q]
                mutual[t, q] = run
        cycle = np.zeros((n_targets, nc), np.int64)
        for t in range(n_targets):
            for q in range(nc):
                for i in range(b):
                    if cyc[i, t] < cycle_ks[q]:
                        cycle[t, q] += 1
        return mutual, cycle

    return counts


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

    ``flat`` (b, n_targets * k) int64: each target's list of each block row, k entries per target;
    ``fwd``, ``back`` (b, n) int16: the source's dense ranks (:func:`engine.dense_ranks`) and inverse ranks
    (:func:`engine.dense_inverse_ranks`) of the block rows (either may be None when its family is not
    asked for). Returns (n_targets, len(mutual_ks)) and (n_targets, len(cycle_ks)) int arrays."""
    import numba

    flat = np.ascontiguousarray(flat, dtype=np.int64)
    b = flat.shape[0]
    empty = np.zeros((b, 1), np.int16)
    fwd = empty if fwd is None else np.ascontiguousarray(fwd)
    back = empty if back is None else np.ascontiguousarray(back)
    numba.set_num_threads(_threads())
    mutual_ks = np.asarray(mutual_ks, np.int64)
    order = np.argsort(mutual_ks, kind="stable")  # the kernel counts at ascending ks
    mutual, cycle = _kernel()(flat, fwd, back, int(n_targets), int(k), mutual_ks[order],
                              np.asarray(cycle_ks, np.int64))
    out = np.empty_like(mutual)
    out[:, order] = mutual
    return out, cycle


def _threads() -> int:
    """torch's thread count (what the job was given), within numba's pool."""
    import numba
    import torch

    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
