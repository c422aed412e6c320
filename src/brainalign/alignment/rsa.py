"""Exact representational similarity analysis (RSA) with Spearman's rank correlation, at scale.

Convention. A representation is a float64 tensor ``Z`` of shape (n, d) whose columns are z-scored
across the n stimuli. Its RDM is the correlation distance between stimulus patterns (rows),
``RDM_ij = 1 - r(Z_i, Z_j)``: each row is centred by its own mean and scaled to unit norm (``U``),
then ``RDM = 1 - U U'`` (rsatoolbox's ``calc_rdm(..., method='correlation')``). Two RDMs are
compared over their upper triangle (``i < j``, row-major, ``m = n (n - 1) / 2`` entries):
``rsa_spearman`` is Spearman's rho with average ranks for ties (rsatoolbox's
``compare(..., method='spearman')``), ``rsa_pearson`` Pearson's r (``method='corr'``; its production
path is the streaming engine, :mod:`brainalign.alignment.engine`; here only a slow reference for tests).

Algorithm of :func:`rsa_spearman_scores`, for S sources and T targets (N = S + T representations):

1. **Ranks, one representation at a time.** The m entries are computed in blocks of whole rows
   (``U[r0:r1] @ U[r0:].T``, upper triangle only; the block height depends on n alone, so every
   pass and every memory budget sees bitwise the same values) and given their exact global ranks,
   average ranks for ties, ties judged on the float64 values. A rank is stored centred,
   ``2 rank - (m + 1)``, an integer in ``[-(m - 1), m - 1]`` (int32 up to m = 2^31).

   * *One sort*, when ``SORT_BYTES`` x m fits the budget (24 m bytes on CPU: the values, their
     permutation and a margin): on CPU one in-place sort of 64-bit integers that pack a truncated
     order-preserving key of the value with the entry's index, then an exact re-sort of the entries
     whose truncated keys collide (:func:`_sort_packed`; about 3 times faster than an argsort), on
     CUDA ``torch.sort``; runs of equal values get the mean of their positions.
   * *By value ranges* otherwise. Range edges are quantiles of a seeded sample of entries (each
     quantile q also gives the edge ``nextafter(q)``, so a value that is heavily tied gets a range
     of its own); one pass counts the entries of every range and notes whether they are all equal.
     A range whose entries are all equal needs no sort: its entries are ranked directly. The others
     are grouped, consecutive, into groups that fit the budget; per group one pass recomputes the
     RDM rows, gathers the entries of the group with their positions, sorts them and ranks them,
     offset by the number of entries below them. Ranges are half-open intervals of values, so a
     run of ties never straddles two ranges and the result is exact. (A range that holds more
     entries than fit, which a sample of 64 entries per range makes vanishingly unlikely, is
     split by a further sampling pass.)

   Cost per representation: ``passes x n^2 d`` multiply-adds (one pass with one sort; ``1 + groups``
   passes by value ranges) plus ``m log m`` comparisons for sorting, and ``4 m`` bytes written when
   the ranks go to disk. On CPU the passes over the entries (counting, gathering, ranking) run in
   numpy on views of the torch tensors; the matrix products in torch.
2. **Storage.** The centred ranks of all N representations (4 N m bytes) are kept in memory when
   they fit the budget (with one sort beside them); otherwise each representation's ranks go to a
   temporary file of raw int32 (readable as ``np.memmap(path, np.int32)``) in a temporary
   directory that is removed at the end, also on error. Files are written and read with plain
   sequential I/O (a memory map is used only to scatter the ranks of an RDM whose m x 4 bytes do
   not fit the budget), so the process's resident memory stays within the budget.
3. **Products.** Chunks of c entries of all N rank vectors are converted to float64 (exact) and
   ``X_s @ X_t'`` (S x c times c x T) gives the cross terms of all pairs at once; the squared norms
   come from the same chunks. ``rho = <x, y> / (|x| |y|)``, the Pearson correlation of the ranks (the
   centred ranks have mean 0), accumulated in float64. Cost ``2 S T m`` flops and ``4 N m`` bytes
   read. A representation whose RDM is constant has ranks all 0 and gets NaN.

A stimulus whose pattern is constant (zero variance after centring, e.g. a one-voxel ROI) makes the
correlation distance undefined: that raises ValueError before any work starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from brainalign.io import proc_bytes

log = logging.getLogger(__name__)

#: RDM entries per row block (rows per block: BLOCK_ELEMENTS // n); depends on nothing but n.
BLOCK_ELEMENTS = 1 << 20
#: On CPU, sort and rank with numpy (several times faster there); False runs the torch code of the CUDA
#: path on CPU (tests).
NUMPY_ON_CPU = True
#: Bytes per element of a row block: its Gram rows, the entries, their range indices, masks, selections.
BLOCK_BYTES = 56
#: Bytes per entry of one sort: values, positions and permutation (torch.sort's buffers on CUDA).
SORT_BYTES = {"cpu": 24, "cuda": 48}
#: Sorted entries ranked per step, and the bytes of one step per entry.
ASSIGN_CHUNK = 1 << 19
ASSIGN_BYTES = 64
#: Bytes per entry and representation of a product chunk: int32 read buffer, float64 copy, margin.
PRODUCT_BYTES = 16
#: Fine value ranges per group that fits the budget, and sampled entries per fine range.
RANGE_OVERSAMPLE = 16
SAMPLE_PER_RANGE = 64
MAX_SAMPLE = 1 << 22
#: Sampling passes allowed to split over-full value ranges before giving up.
MAX_REFINE = 8
SEED = 20240531
#: The fewest entries a budget must let one sort hold.
MIN_CAPACITY = 16
#: A row whose centred norm is below this fraction of its raw norm counts as constant.
CONSTANT_TOLERANCE = 1e-12


# ----------------------------------------------------------------------------- RDM entries


def n_entries(n: int) -> int:
    """Number of upper-triangle entries of an n x n RDM, ``n (n - 1) / 2``."""
    return n * (n - 1) // 2


def unit_rows(z, label: str = "representation"):
    """Rows centred by their own mean and scaled to unit norm.

    Parameters
    ----------
    z : torch.Tensor of shape (n, d), float64
    label : how errors name the representation (``'target 3'``)

    Returns
    -------
    torch.Tensor of shape (n, d), float64: ``U`` with ``1 - U U'`` the correlation-distance RDM

    Raises
    ------
    ValueError
        when a row is constant (zero variance after centring), which leaves its correlations undefined.
    """
    import torch

    zc = z - z.mean(dim=1, keepdim=True)
    norm = torch.sqrt(torch.einsum("ij,ij->i", zc, zc))
    raw = torch.sqrt(torch.einsum("ij,ij->i", z, z))
    bad = (norm == 0) | (norm <= CONSTANT_TOLERANCE * raw)
    if bool(bad.any()):
        count = int(bad.sum())
        raise ValueError(
            f"{label} has stimuli with a constant pattern (e.g. a one-voxel ROI): correlation distance is "
            f"undefined; use ROIs of >= 2 voxels ({count} of {z.shape[0]} stimuli, first: "
            f"{int(torch.nonzero(bad)[0, 0])})"
        )
    zc /= norm[:, None]
    return zc


def block_rows(n: int) -> int:
    """Rows per block of RDM entries: ``BLOCK_ELEMENTS // n`` (at least 1, at most n)."""
    return max(1, min(n, BLOCK_ELEMENTS // max(n, 1)))


def rdm_blocks(u):
    """The upper-triangle entries of ``1 - U U'`` in blocks of whole rows.

    Parameters
    ----------
    u : torch.Tensor of shape (n, d), float64, rows of unit norm (:func:`unit_rows`)

    Yields
    ------
    (offset, values) : the condensed position of the block's first entry and a float64 tensor of
        shape (k,): entries ``(i, j)``, ``i < j``, of rows ``r0 <= i < r1`` in row-major order,
        which are the condensed positions ``offset ... offset + k - 1``. ``values`` is a buffer that
        the next block overwrites: copy what must outlive the step.
    """
    import torch

    n = u.shape[0]
    b = block_rows(n)
    buf = torch.empty(b * max(n - 1, 1), dtype=torch.float64, device=u.device)
    one = torch.ones((), dtype=torch.float64, device=u.device)
    offset = 0
    for r0 in range(0, n - 1, b):
        r1 = min(n - 1, r0 + b)
        g = u[r0:r1] @ u[r0:].T
        k = 0
        for a in range(r1 - r0):
            w = n - 1 - (r0 + a)
            torch.sub(one, g[a, a + 1 :], out=buf[k : k + w])  # 1 - g, rounded once as rsatoolbox's ``1 - U U'``
            k += w
        del g
        yield offset, buf[:k]
        offset += k


def condensed_rdm(z):
    """The correlation-distance RDM of ``z``, condensed (for tests and small n).

    Parameters
    ----------
    z : torch.Tensor of shape (n, d)

    Returns
    -------
    torch.Tensor of shape (n (n - 1) / 2,), float64: entries ``(i, j)``, ``i < j``, row-major (the order
        of ``scipy.spatial.distance.squareform`` and of rsatoolbox's ``get_vectors``), bitwise the values
        that :func:`rsa_spearman_scores` ranks
    """
    import torch

    u = unit_rows(torch.as_tensor(z).to(torch.float64))
    out = torch.empty(n_entries(u.shape[0]), dtype=torch.float64, device=u.device)
    for offset, values in rdm_blocks(u):
        out[offset : offset + values.numel()] = values
    return out


# ----------------------------------------------------------------------------- ranking


def _sort_packed(array: np.ndarray):
    """Sort float64 ``array`` (shape (k,)) in place and return its sorting permutation (int64), or None
    where the shortcut does not pay (many near-equal values): the caller then argsorts.

    Each value's order-preserving 64-bit key, less the smallest, keeps its top ``64 - p`` bits and the
    entry's index fills the low ``p = bitlen(k - 1)`` bits; one in-place sort of these integers (numpy's
    vectorised sort, several times faster than an argsort) orders the entries by value up to the dropped
    key bits. Entries whose kept bits equal a neighbour's are then put in exact order by an argsort of
    their values alone; since the kept bits are a monotone function of the value, doing that for all of
    them at once leaves every other entry in place. Memory: 8 bytes per entry beyond ``array``.
    """
    k = array.size
    pbits = max(1, (k - 1).bit_length())
    if pbits > 40:
        return None
    np.add(array, 0.0, out=array)  # -0.0 becomes 0.0 (equal values; keys must agree too)
    sign = np.uint64(1 << 63)

    def keys(bits):
        return np.where(bits >= sign, ~bits, bits | sign)

    lo, hi = (int(keys(np.array([x], dtype=np.float64).view(np.uint64))[0]) for x in (array.min(), array.max()))
    drop = max(0, (hi - lo).bit_length() - (64 - pbits))
    bits = array.view(np.uint64)
    packed = np.empty(k, dtype=np.uint64)
    step = ASSIGN_CHUNK
    for a in range(0, k, step):
        b = min(k, a + step)
        key = keys(bits[a:b])
        key -= np.uint64(lo)
        key >>= np.uint64(drop)
        key <<= np.uint64(pbits)
        key |= np.arange(a, b, dtype=np.uint64)
        packed[a:b] = key
    del key
    packed.sort()
    # slots whose kept key bits equal a neighbour's: their order within the run is by index, not value
    runs = []
    total = 0
    shift = np.uint64(pbits)
    for a in range(0, k - 1, step):
        b = min(k - 1, a + step)
        same = np.flatnonzero((packed[a + 1 : b + 1] >> shift) == (packed[a:b] >> shift))
        if same.size:
            runs.append(same + a)
            total += same.size
            if total > k // 16:
                return None
    np.bitwise_and(packed, np.uint64((1 << pbits) - 1), out=packed)
    order = packed.view(np.int64)
    if runs:
        slots = np.unique(np.concatenate([np.concatenate(runs), np.concatenate(runs) + 1]))
        positions = order[slots]
        order[slots] = positions[np.argsort(array[positions], kind="stable")]
    array.sort()
    return order


def _sort(values):
    """Sort ``values`` (float64, shape (k,)) in place where possible; return ``(sorted, permutation)``.

    On CPU the packed-key sort of :func:`_sort_packed` (else numpy's argsort, then an in-place sort of
    ``values``): 8 bytes per entry beyond the values. On CUDA (or with :data:`NUMPY_ON_CPU` off)
    ``torch.sort``. Tied values may come in any
    order.
    """
    import torch

    if values.device.type == "cpu" and NUMPY_ON_CPU:
        array = values.numpy()
        order = _sort_packed(array) if array.size > 1 else None
        if order is None:
            order = np.argsort(array)
            array.sort()
        return values, torch.from_numpy(order)
    return torch.sort(values)


def _assign_sorted(sorted_values, order, out, m: int, shift, positions=None) -> int:
    """Write the centred average ranks of sorted entries into ``out``.

    Parameters
    ----------
    sorted_values : torch.Tensor of shape (k,), float64, ascending
    order : torch.Tensor of shape (k,), int64: entry ``p`` of ``sorted_values`` is entry ``order[p]`` of
        the gathered entries
    out : torch.Tensor of shape (m,), int32 or int64: centred ranks by condensed position
    m : number of entries of the whole RDM
    shift : int, or a function of a chunk of sorted values (shape (c,)) giving, per entry, the
        global sorted position of the first gathered entry of its value range minus that entry's
        index in ``sorted_values`` (int64). Runs of ties must not straddle two shifts.
    positions : torch.Tensor of shape (k,), int64, or None: condensed positions of the gathered
        entries (None: entry p is position p)

    Returns
    -------
    int : number of entries in runs of ties
    """
    import torch

    if NUMPY_ON_CPU and sorted_values.device.type == "cpu" and out.device.type == "cpu":
        return _assign_sorted_numpy(sorted_values, order, out, m, shift, positions)
    k = sorted_values.numel()
    device = sorted_values.device
    tied_total = 0
    for p0 in range(0, k, ASSIGN_CHUNK):
        p1 = min(k, p0 + ASSIGN_CHUNK)
        s = sorted_values[p0:p1]
        # 2 (position + 1) - (m + 1) at global sorted position ``position``
        ranks = torch.arange(2 * p0 + 1 - m, 2 * p1 + 1 - m, 2, dtype=torch.int64, device=device)
        sh = None
        if callable(shift):
            sh = shift(s)
            ranks += 2 * sh
        elif shift:
            ranks += 2 * int(shift)
        a, b = max(p0 - 1, 0), min(p1 + 1, k)
        window = sorted_values[a:b]
        equal = window[1:] == window[:-1]
        if bool(equal.any()):
            tied = torch.zeros(b - a, dtype=torch.bool, device=device)
            tied[:-1] |= equal
            tied[1:] |= equal
            idx = torch.nonzero(tied[p0 - a : p1 - a]).squeeze(1)
            if idx.numel():
                tied_total += idx.numel()
                unique, inverse = torch.unique_consecutive(s[idx], return_inverse=True)
                lo = torch.searchsorted(sorted_values, unique, right=False)
                hi = torch.searchsorted(sorted_values, unique, right=True)
                fix = (lo + hi)[inverse] - m
                if sh is not None:
                    fix += 2 * sh[idx]
                elif shift:
                    fix += 2 * int(shift)
                ranks[idx] = fix
        dest = order[p0:p1] if positions is None else positions[order[p0:p1]]
        out.scatter_(0, dest.to(out.device), ranks.to(device=out.device, dtype=out.dtype))
    return tied_total


def _assign_sorted_numpy(sorted_values, order, out, m: int, shift, positions=None) -> int:
    """:func:`_assign_sorted` for CPU tensors, in numpy (about 3 times faster than torch's CPU kernels for
    these elementwise steps and the scatter)."""
    sv, order_np, out_np = sorted_values.numpy(), order.numpy(), out.numpy()
    pos_np = None if positions is None else positions.numpy()
    k = sv.size
    tied_total = 0
    for p0 in range(0, k, ASSIGN_CHUNK):
        p1 = min(k, p0 + ASSIGN_CHUNK)
        ranks = np.arange(2 * p0 + 1 - m, 2 * p1 + 1 - m, 2, dtype=np.int64)
        sh = None
        if callable(shift):
            sh = shift(sorted_values[p0:p1]).numpy()
            ranks += 2 * sh
        elif shift:
            ranks += 2 * int(shift)
        a, b = max(p0 - 1, 0), min(p1 + 1, k)
        window = sv[a:b]
        equal = window[1:] == window[:-1]
        if equal.any():
            tied = np.zeros(b - a, dtype=bool)
            tied[:-1] |= equal
            tied[1:] |= equal
            idx = np.flatnonzero(tied[p0 - a : p1 - a])
            tied_total += idx.size
            unique, inverse = np.unique(sv[p0:p1][idx], return_inverse=True)
            fix = (np.searchsorted(sv, unique, "left") + np.searchsorted(sv, unique, "right"))[inverse] - m
            if sh is not None:
                fix += 2 * sh[idx]
            elif shift:
                fix += 2 * int(shift)
            ranks[idx] = fix
        dest = order_np[p0:p1] if pos_np is None else pos_np[order_np[p0:p1]]
        out_np[dest] = ranks
    return tied_total


def rank_average(values):
    """Centred average ranks of a vector, ties judged on the exact float64 values.

    Parameters
    ----------
    values : torch.Tensor of shape (m,) (or anything ``torch.as_tensor`` takes), converted to float64

    Returns
    -------
    torch.Tensor of shape (m,), int64: ``2 rank - (m + 1)`` with ``rank`` in 1..m the average rank
        (scipy's ``rankdata(method='average')``); always an integer
    """
    import torch

    v = torch.as_tensor(values).to(torch.float64).clone().reshape(-1)
    m = v.numel()
    out = torch.empty(m, dtype=torch.int64, device=v.device)
    sorted_values, order = _sort(v)
    _assign_sorted(sorted_values, order, out, m, 0)
    return out


def _sample_values(u, count: int, gen):
    """RDM entries at ``count`` random pairs ``i != j`` (for range edges only: computed elementwise,
    so they may differ from :func:`rdm_blocks` in the last bit). Shape (count,), float64."""
    import torch

    n = u.shape[0]
    i = torch.randint(0, n, (count,), generator=gen, device=u.device)
    j = torch.randint(0, n - 1, (count,), generator=gen, device=u.device)
    j = j + (j >= i).to(j.dtype)
    out = torch.empty(count, dtype=torch.float64, device=u.device)
    step = max(1, (1 << 20) // max(1, u.shape[1]))
    for a in range(0, count, step):
        b = min(count, a + step)
        out[a:b] = 1.0 - torch.einsum("ij,ij->i", u[i[a:b]], u[j[a:b]])
    return out


def _edges_from_sample(sample, ranges: int):
    """Range edges: ``ranges - 1`` quantiles of ``sample`` and the next float64 above each of them
    (so that a heavily tied value gets a range of its own). Sorted, unique, shape (e,)."""
    import torch

    s = torch.sort(sample.reshape(-1)).values
    if s.numel() == 0:
        return s
    ranges = max(2, min(ranges, s.numel()))
    q = s[(torch.arange(1, ranges, device=s.device) * s.numel()) // ranges]
    return torch.unique(torch.cat([q, torch.nextafter(q, torch.full_like(q, math.inf))]))


def _backend(device):
    """The array library of the passes over an RDM: numpy views of CPU tensors (several times faster than
    torch's CPU kernels for these elementwise steps), else torch. Returns ``(xp, view)``."""
    import torch

    if device.type == "cpu" and NUMPY_ON_CPU:
        return np, lambda t: t.numpy()
    return torch, lambda t: t


def _flat(xp, mask):
    """Indices of the True entries of a 1-D mask."""
    return np.flatnonzero(mask) if xp is np else mask.nonzero().squeeze(1)


def _count_ranges(u, edges):
    """One pass: per range (``len(edges) + 1`` half-open intervals), its count and whether its entries are
    all equal. Returns ``(counts, single)``: int64 and bool tensors of shape (len(edges) + 1,)."""
    import torch

    xp, view = _backend(u.device)
    k = edges.numel() + 1
    counts_t = torch.zeros(k, dtype=torch.int64, device=u.device)
    ref_t = torch.full((k,), math.nan, dtype=torch.float64, device=u.device)  # one entry of each range
    differs_t = torch.zeros(k, dtype=torch.bool, device=u.device)
    counts, ref, differs, e = view(counts_t), view(ref_t), view(differs_t), view(edges)
    for _, block in rdm_blocks(u):
        values = view(block)
        bk = xp.searchsorted(e, values, side="right")
        counts += xp.bincount(bk, minlength=k)
        unset = xp.isnan(ref[bk])
        ref[bk[unset]] = values[unset]  # any entry of the range will do
        differs[bk[values != ref[bk]]] = True
    return counts_t, (counts_t > 0) & ~differs_t


def _refine_edges(u, edges, over, counts, capacity: int, gen):
    """One sampling pass over the entries of over-full ranges (``over``: bool, one per range);
    returns the edges with quantiles of each over-full range's sample added."""
    import torch

    want = RANGE_OVERSAMPLE * SAMPLE_PER_RANGE * torch.ceil(counts.double() / capacity)
    prob = torch.where(over, torch.clamp(want / counts.clamp(min=1).double(), max=1.0), torch.zeros_like(want))
    kept = []
    for _, values in rdm_blocks(u):
        bk = torch.bucketize(values, edges, right=True)
        idx = torch.nonzero(over[bk]).squeeze(1)
        if idx.numel():
            keep = torch.rand(idx.numel(), generator=gen, device=u.device, dtype=torch.float64) < prob[bk[idx]]
            kept.append(values[idx[keep]])
    sample = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.float64, device=u.device)
    bk = torch.bucketize(sample, edges, right=True)
    new = [edges]
    for r in torch.nonzero(over).squeeze(1).tolist():
        part = sample[bk == r]
        if part.numel():
            new.append(_edges_from_sample(part, RANGE_OVERSAMPLE * math.ceil(int(counts[r]) / capacity)))
    return torch.unique(torch.cat(new))


def _gather_group(u, edges, single, single_rank, out, a: int, b: int, need: int, direct_need: int):
    """One pass for the ranges ``a .. b - 1``: ranks the entries of its single-valued ranges into ``out``
    and gathers the others. Returns ``(values, positions)``, shapes (need,), float64 and int64."""
    import torch

    xp, view = _backend(u.device)
    e = view(edges)
    lower = float(e[a - 1]) if a > 0 else -math.inf
    upper = float(e[b - 1]) if b - 1 < len(e) else math.inf
    gv_t = torch.empty(need, dtype=torch.float64, device=u.device)
    gp_t = torch.empty(need, dtype=torch.int64, device=u.device)
    gv, gp, one_of, rank_of = view(gv_t), view(gp_t), view(single), view(single_rank)
    dest = view(out) if out.device == u.device else None
    fill = direct = 0
    for offset, block in rdm_blocks(u):
        values = view(block)
        idx = _flat(xp, (values >= lower) & (values < upper))
        if not len(idx):
            continue
        v = values[idx]
        bk = xp.searchsorted(e, v, side="right")
        one = one_of[bk]
        if direct_need:
            d, r = idx[one] + offset, rank_of[bk[one]]
            if dest is not None:
                dest[d] = r
            else:  # ranks in a CPU memory map, entries on the GPU
                out[d.cpu()] = r.to(device="cpu", dtype=out.dtype)
            direct += len(d)
            idx, v = idx[~one], v[~one]
        k = len(idx)
        if fill + k > need:
            raise RuntimeError("RDM ranking: a pass saw more entries than the counting pass")
        gv[fill : fill + k] = v
        gp[fill : fill + k] = idx + offset
        fill += k
    if fill != need or direct != direct_need:
        raise RuntimeError("RDM ranking: the passes over the RDM disagree on its entries")
    return gv_t, gp_t


def _rank_by_ranges(u, out, capacity: int, gen) -> dict:
    """Exact centred ranks of the RDM of ``u`` into ``out`` (shape (m,)), sorting at most ``capacity``
    entries at a time. Returns counts of what it did: ``ranges`` (groups sorted), ``buckets`` (fine
    value ranges), ``passes`` (over the RDM), ``refine`` (sampling passes), ``ties``."""
    import torch

    n = u.shape[0]
    m = n_entries(n)
    fine = RANGE_OVERSAMPLE * math.ceil(m / capacity)
    sample = _sample_values(u, min(MAX_SAMPLE, max(capacity, 1024), fine * SAMPLE_PER_RANGE), gen)
    edges = _edges_from_sample(sample, fine)
    del sample
    passes = refine = 0
    while True:
        counts, single = _count_ranges(u, edges)
        passes += 1
        multi = torch.where(single, torch.zeros_like(counts), counts)
        over = multi > capacity
        if not bool(over.any()):
            break
        if refine >= MAX_REFINE:
            raise MemoryError(
                f"RDM ranking: {int(over.sum())} value ranges still hold more than {capacity} distinct-valued "
                f"entries after {refine} refinements; raise max_bytes"
            )
        edges = _refine_edges(u, edges, over, counts, capacity, gen)
        passes += 1
        refine += 1
    if int(counts.sum()) != m:
        raise RuntimeError(f"RDM ranking: counted {int(counts.sum())} entries, expected {m}")
    below = torch.cumsum(counts, 0) - counts  # entries below each range
    single_rank = (2 * below + counts - m).to(out.dtype)  # centred average rank of a range of equal values
    multi_below = torch.cumsum(multi, 0) - multi
    # consecutive ranges, grouped greedily so that each group's distinct-valued entries fit
    multi_host, counts_host = multi.tolist(), counts.tolist()
    groups, g0, load = [], 0, 0
    for r, c in enumerate(multi_host):
        if c and load + c > capacity:
            groups.append((g0, r))
            g0, load = r, 0
        load += c
    groups.append((g0, len(multi_host)))
    groups = [(a, b) for a, b in groups if sum(counts_host[a:b])]
    ties = int(counts[single & (counts > 1)].sum())
    for a, b in groups:
        need = sum(multi_host[a:b])
        gv, gp = _gather_group(u, edges, single, single_rank, out, a, b, need, sum(counts_host[a:b]) - need)
        passes += 1
        if not need:
            continue
        sorted_values, order = _sort(gv)
        # global sorted position of a gathered entry = its index + below[r] - (multi_below[r] - multi_below[a])
        offset_of = below - (multi_below - multi_below[a])

        def shift(s, offset_of=offset_of):
            return offset_of[torch.bucketize(s, edges, right=True)]

        ties += _assign_sorted(sorted_values, order, out, m, shift, positions=gp)
        del gv, gp, sorted_values, order
    return {"ranges": len(groups), "buckets": int(edges.numel()) + 1, "passes": passes, "refine": refine, "ties": ties}


def rank_rdm(u, out, budget: int, gen=None) -> dict:
    """Exact centred average ranks of the RDM entries of ``u``, within ``budget`` bytes.

    Parameters
    ----------
    u : torch.Tensor of shape (n, d), float64, rows of unit norm (:func:`unit_rows`)
    out : torch.Tensor of shape (n (n - 1) / 2,), int32 or int64, on ``u``'s device or a CPU memory
        map: receives ``2 rank - (m + 1)`` by condensed position
    budget : bytes that the sort may use (beyond ``u``, ``out`` and one row block)
    gen : torch.Generator on ``u``'s device for the range sample (default: seeded with :data:`SEED`)

    Returns
    -------
    dict : ``ranges`` (1: one sort), ``buckets``, ``passes`` over the RDM, ``refine``, ``ties``
        (entries in runs of ties)
    """
    import torch

    m = n_entries(u.shape[0])
    per = SORT_BYTES.get(u.device.type, SORT_BYTES["cuda"])
    if per * m <= budget:
        t0 = time.perf_counter()
        values = torch.empty(m, dtype=torch.float64, device=u.device)
        for offset, block in rdm_blocks(u):
            values[offset : offset + block.numel()] = block
        t1 = time.perf_counter()
        sorted_values, order = _sort(values)
        t2 = time.perf_counter()
        ties = _assign_sorted(sorted_values, order, out, m, 0)
        t3 = time.perf_counter()
        return {"ranges": 1, "buckets": 1, "passes": 1, "refine": 0, "ties": ties,
                "seconds_rdm": t1 - t0, "seconds_sort": t2 - t1, "seconds_assign": t3 - t2}
    capacity = budget // per
    if capacity < MIN_CAPACITY:
        raise MemoryError(f"RDM ranking: a budget of {budget} bytes sorts only {capacity} entries; raise max_bytes")
    if gen is None:
        gen = torch.Generator(device=u.device)
        gen.manual_seed(SEED)
    return _rank_by_ranges(u, out, capacity, gen)


# ----------------------------------------------------------------------------- scores


def _as_tensors(reps: Sequence, side: str):
    import torch

    out = []
    for i, z in enumerate(reps):
        t = torch.as_tensor(z)
        if t.ndim != 2:
            raise ValueError(f"{side} {i} must be a 2-D array (stimuli x features), got shape {tuple(t.shape)}")
        out.append(t if t.dtype == torch.float64 else t.to(torch.float64))
    return out


def plan(n: int, d_max: int, count: int, max_bytes: int, device_type: str) -> dict:
    """How :func:`rsa_spearman_scores` spends ``max_bytes``: ranks in memory or on disk, the sort budget,
    the product chunk.

    Parameters
    ----------
    n : stimuli; d_max : the widest representation; count : S + T
    max_bytes : the budget beyond the input tensors; device_type : ``'cpu'`` or ``'cuda'``

    Returns
    -------
    dict : ``m``, ``rank_dtype_bytes``, ``fixed`` (unit rows, one row block, one ranking step),
        ``in_memory``, ``out_in_memory`` (one representation's ranks held while it is ranked),
        ``rank_budget``, ``chunk`` (entries per product chunk), ``disk_bytes``
    """
    m = n_entries(n)
    rb = 4 if m - 1 < 2**31 else 8
    per = SORT_BYTES.get(device_type, SORT_BYTES["cuda"])
    fixed = 2 * n * d_max * 8 + block_rows(n) * n * BLOCK_BYTES + min(m, ASSIGN_CHUNK) * ASSIGN_BYTES
    held = count * m * rb
    in_memory = held + fixed + per * m <= max_bytes
    if in_memory:
        out_in_memory, rank_budget = True, max_bytes - held - fixed
        chunk_budget, chunk_per = max_bytes - held, count * (PRODUCT_BYTES - 4)
    else:
        out_in_memory = m * rb <= (max_bytes - fixed) // 4
        rank_budget = max_bytes - fixed - (m * rb if out_in_memory else 0)
        chunk_budget, chunk_per = max_bytes, count * PRODUCT_BYTES
    chunk = int(max(1, min(m, chunk_budget // max(1, chunk_per))))
    return {
        "m": m, "rank_dtype_bytes": rb, "fixed": fixed, "in_memory": in_memory, "out_in_memory": out_in_memory,
        "rank_budget": int(rank_budget), "chunk": chunk, "disk_bytes": 0 if in_memory else held,
    }


def _read_chunk(handles, buf, p0: int, count: int, itemsize: int) -> None:
    """Entries ``p0 ... p0 + count - 1`` of every rank file into the rows of ``buf`` (numpy, (N, >= count))."""
    for k, fd in enumerate(handles):
        view = memoryview(buf[k, :count]).cast("B")
        got, pos = 0, p0 * itemsize
        while got < view.nbytes:
            r = os.preadv(fd, [view[got:]], pos + got)
            if r <= 0:
                raise OSError(f"rank file {k}: short read at entry {p0}")
            got += r


def _products(source_chunks, count: int, s: int, device):
    """Cross terms (S x T) and squared norms (N,) of rank chunks: ``source_chunks`` yields float64 tensors
    of shape (N, c)."""
    import torch

    cross = torch.zeros((s, count - s), dtype=torch.float64, device=device)
    ssq = torch.zeros(count, dtype=torch.float64, device=device)
    for x in source_chunks:
        ssq += torch.einsum("ij,ij->i", x, x)
        cross += x[:s] @ x[s:].T
        del x  # before the next chunk is made
    return cross, ssq


def rsa_spearman_scores(
    sources: Sequence, targets: Sequence, *, max_bytes: int | None = None, workdir=None,
    what: str = "rsa_spearman", stats: dict | None = None,
) -> np.ndarray:
    """(S, T) Spearman rho of every (source, target) pair of RDMs, exactly.

    Parameters
    ----------
    sources : sequence of S torch tensors of shape (n, d_i), float64, columns z-scored across stimuli
    targets : sequence of T torch tensors of shape (n, v_j), same n and device as the sources
    max_bytes : memory budget beyond the input tensors (default
        :func:`brainalign.alignment.metrics.default_max_bytes` of the device: 1.5 GiB on CPU)
    workdir : folder for the temporary directory of rank files when the ranks do not fit the budget
        (default: the system's temporary folder); the directory is removed at the end, also on error
    what : prefix of the log lines (one per representation ranked, with its seconds)
    stats : optional dict, filled with what the job did: ``on_disk``, ``ranges`` (the most value-range
        groups one RDM needed; 1 = one sort), ``passes`` (over RDMs, all representations), ``workdir``
        (the temporary directory, or None), ``chunk``, ``disk_bytes``, ``rank_seconds``,
        ``product_seconds``, ``per_rep`` (one dict per representation)

    Returns
    -------
    np.ndarray of shape (S, T), float64: rsatoolbox's ``compare(rdm_s, rdm_t, method='spearman')``; NaN for
        pairs where either RDM is constant

    Raises
    ------
    ValueError
        for an empty list, a representation that is not 2-D, differing numbers of stimuli or devices, fewer
        than 2 stimuli, or a stimulus with a constant pattern (named by side and index)
    """
    import torch

    from brainalign.alignment.metrics import default_max_bytes

    src, tgt = _as_tensors(sources, "source"), _as_tensors(targets, "target")
    if not src or not tgt:
        raise ValueError("rsa_spearman_scores needs at least one source and one target")
    reps = [("source", i, z) for i, z in enumerate(src)] + [("target", j, z) for j, z in enumerate(tgt)]
    n, device = src[0].shape[0], src[0].device
    for side, i, z in reps:
        if z.shape[0] != n:
            raise ValueError(f"{side} {i} has {z.shape[0]} stimuli, source 0 has {n}: RDMs must share their stimuli")
        if z.device != device:
            raise ValueError(f"{side} {i} is on {z.device}, source 0 on {device}: put all representations on one "
                             "device")
    if n < 2:
        raise ValueError(f"an RDM needs at least 2 stimuli, got {n}")
    for side, i, z in reps:  # fail before any long work
        unit_rows(z, f"{side} {i}")
    s_count, count = len(src), len(reps)
    if max_bytes is None:
        max_bytes = default_max_bytes(str(device))
    p = plan(n, max(z.shape[1] for _, _, z in reps), count, int(max_bytes), device.type)
    least = SORT_BYTES.get(device.type, SORT_BYTES["cuda"]) * MIN_CAPACITY
    if p["rank_budget"] < least:
        raise MemoryError(
            f"max_bytes = {int(max_bytes)} leaves {p['rank_budget']} bytes to rank an RDM of n = {n} stimuli "
            f"(at least {least} needed beyond {p['fixed']} for its rows and blocks); raise max_bytes"
        )
    m, rank_dtype = p["m"], (torch.int32 if p["rank_dtype_bytes"] == 4 else torch.int64)
    itemsize = p["rank_dtype_bytes"]
    np_dtype = np.int32 if itemsize == 4 else np.int64
    gen = torch.Generator(device=device)
    info = {"on_disk": not p["in_memory"], "workdir": None, "chunk": p["chunk"], "disk_bytes": p["disk_bytes"],
            "per_rep": [], "m": m, "n": n}
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        folder = None
        if not p["in_memory"]:
            if workdir is not None:
                os.makedirs(workdir, exist_ok=True)
            folder = stack.enter_context(tempfile.TemporaryDirectory(dir=workdir, prefix="rsa_ranks_"))
            info["workdir"] = folder
        held = torch.empty((count, m), dtype=rank_dtype, device=device) if p["in_memory"] else None
        paths = []
        for k, (side, i, z) in enumerate(reps):
            t0 = time.perf_counter()
            u = unit_rows(z, f"{side} {i}")
            gen.manual_seed(SEED)
            mapped = None
            if held is not None:
                out = held[k]
            elif p["out_in_memory"]:
                out = torch.empty(m, dtype=rank_dtype, device=device)
            else:
                mapped = np.memmap(os.path.join(folder, f"{k:05d}.ranks"), dtype=np_dtype, mode="w+", shape=(m,))
                out = torch.from_numpy(mapped)
            r = rank_rdm(u, out, p["rank_budget"], gen)
            del u
            if folder is not None:
                path = os.path.join(folder, f"{k:05d}.ranks")
                if mapped is not None:
                    mapped.flush()
                    del out, mapped
                else:
                    out.cpu().numpy().tofile(path)
                    del out
                paths.append(path)
            seconds = time.perf_counter() - t0
            info["per_rep"].append({"side": side, "index": i, "seconds": seconds, **r})
            log.info(
                "%s: ranked %s %d (%d/%d, n = %d): %d value range(s), %d pass(es), %.1f s",
                what, side, i, k + 1, count, n, r["ranges"], r["passes"], seconds,
            )
        info["rank_seconds"] = time.perf_counter() - t_start
        t1 = time.perf_counter()
        c = p["chunk"]
        if held is not None:
            chunks = (held[:, a : min(m, a + c)].to(torch.float64) for a in range(0, m, c))
            cross, ssq = _products(chunks, count, s_count, device)
        else:
            handles = [os.open(path, os.O_RDONLY) for path in paths]
            stack.callback(lambda: [os.close(fd) for fd in handles])
            buf = np.empty((count, c), dtype=np_dtype)

            def chunks():
                for a in range(0, m, c):
                    k = min(c, m - a)
                    _read_chunk(handles, buf, a, k, itemsize)
                    yield torch.from_numpy(buf[:, :k]).to(device=device, dtype=torch.float64)

            cross, ssq = _products(chunks(), count, s_count, device)
        info["product_seconds"] = time.perf_counter() - t1
    norm = torch.sqrt(ssq[:s_count, None] * ssq[None, s_count:])
    rho = torch.where(norm > 0, cross / torch.where(norm > 0, norm, torch.ones_like(norm)),
                      torch.full_like(norm, math.nan))
    info["ranges"] = max(r["ranges"] for r in info["per_rep"])
    info["passes"] = sum(r["passes"] for r in info["per_rep"])
    info["seconds"] = time.perf_counter() - t_start
    if stats is not None:
        stats.update(info)
    return rho.cpu().numpy()


# ----------------------------------------------------------------------------- references (tests)


def rsa_pearson_reference(x, y) -> float:
    """Pearson r of the condensed correlation-distance RDMs of ``x`` and ``y`` (shapes (n, d), (n, v)): the
    slow, obvious ``rsa_pearson`` (rsatoolbox's ``compare(..., method='corr')``), for tests."""
    a = condensed_rdm(x).cpu().numpy()
    b = condensed_rdm(y).cpu().numpy()
    return float(np.corrcoef(a, b)[0, 1])


def rsa_spearman_reference(x, y) -> float:
    """Spearman rho of the condensed RDMs of ``x`` and ``y`` by ``scipy.stats.spearmanr``, for tests."""
    from scipy.stats import spearmanr

    return float(spearmanr(condensed_rdm(x).cpu().numpy(), condensed_rdm(y).cpu().numpy())[0])


# ----------------------------------------------------------------------------- benchmark


def _reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _zscored(n: int, d: int, rank: int, gen):
    """A float64 (n, d) representation with z-scored columns: a rank-``rank`` signal plus noise."""
    import torch

    signal = torch.randn(n, rank, generator=gen, dtype=torch.float64) @ torch.randn(rank, d, generator=gen,
                                                                                     dtype=torch.float64)
    z = signal + torch.randn(n, d, generator=gen, dtype=torch.float64)
    z -= z.mean(0)
    z /= z.std(0)
    return z


def bench_rsa_spearman(n: int = 8859, sources: int = 12, d: int = 768, targets: int = 180, v: int = 200,
                       measured: int = 4, small_n: int = 1000, range_bytes: int | None = 512 << 20,
                       job: tuple[int, int] | None = (2, 2), workdir=None, max_bytes: int | None = None) -> dict:
    """Time exact RSA-Spearman at the paper's size and project the whole job.

    Measured: ranking one source (n x d) and one target (n x v) at the default budget (seconds and the peak
    RSS above the RSS before, from ``VmHWM``); ranking one source at ``range_bytes`` (by value ranges);
    writing ``measured`` representations' rank files (with fsync) and reading them back in the product
    phase's chunks (page cache dropped for those files first, so the reads come from disk); the float64
    products of one chunk for S x T pairs; :func:`rsa_spearman_scores` itself at n with ``job`` = (sources,
    targets), its first pair checked against ``scipy.stats.spearmanr``; and the whole job at ``small_n``
    stimuli with S x T representations. Projected: the job at n, as ``S t_source + T t_target`` for ranking,
    plus writes, plus ``chunks x (N read + products)``.

    Returns
    -------
    dict of the measurements and the projection (seconds, bytes)
    """
    import torch

    from brainalign.alignment.metrics import default_max_bytes

    budget = int(max_bytes if max_bytes is not None else default_max_bytes("cpu"))
    gen = torch.Generator().manual_seed(0)
    count = sources + targets
    p = plan(n, max(d, v), count, budget, "cpu")
    m = p["m"]
    res: dict = {"n": n, "m": m, "sources": sources, "targets": targets, "d": d, "v": v, "max_bytes": budget,
                 "threads": torch.get_num_threads(), "load_average_start": os.getloadavg(), "plan": p}

    def rank_one(z, rank_budget):
        base = proc_bytes("VmRSS")
        reset = _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        u = unit_rows(z)
        out = torch.empty(m, dtype=torch.int32)
        r = rank_rdm(u, out, rank_budget)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = proc_bytes("VmHWM") - base if reset else None
        return out, {"seconds": seconds, "cpu_seconds": cpu, "peak_above_base": peak, "rank_budget": rank_budget, **r}

    zs = _zscored(n, d, 64, gen)
    zt = _zscored(n, v, 32, gen)
    ranks = []
    out, res["rank_source"] = rank_one(zs, p["rank_budget"])
    ranks.append(out)
    out, res["rank_target"] = rank_one(zt, p["rank_budget"])
    ranks.append(out)
    if range_bytes:  # the budget left to the sort when one representation's ranks are held in memory
        rp = plan(n, max(d, v), count, int(range_bytes), "cpu")
        out, res["rank_source_ranges"] = rank_one(zs, int(range_bytes) - rp["fixed"] - 4 * m)
        res["rank_source_ranges"]["max_bytes"] = int(range_bytes)
        res["ranges_identical"] = bool(torch.equal(out, ranks[0]))
        del out
    del zs, zt
    # rank files: write ``measured`` of them, then read them back in the full job's chunks
    c = p["chunk"]
    with tempfile.TemporaryDirectory(dir=workdir, prefix="rsa_bench_") as folder:
        paths, t_write = [], 0.0
        for k in range(measured):
            path = os.path.join(folder, f"{k:05d}.ranks")
            t0 = time.perf_counter()
            arr = ranks[k % len(ranks)].numpy()
            with open(path, "wb") as f:
                arr.tofile(f)
                f.flush()
                os.fsync(f.fileno())
            t_write += time.perf_counter() - t0
            paths.append(path)
        handles = [os.open(path, os.O_RDONLY) for path in paths]
        try:
            for fd in handles:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            buf = np.empty((measured, c), dtype=np.int32)
            t0 = time.perf_counter()
            for a in range(0, m, c):
                _read_chunk(handles, buf, a, min(c, m - a), 4)
            t_read = time.perf_counter() - t0
        finally:
            for fd in handles:
                os.close(fd)
    del ranks
    chunks = math.ceil(m / c)
    x = torch.from_numpy(np.random.default_rng(0).integers(-(m - 1), m, size=(count, c), dtype=np.int32))
    t0 = time.perf_counter()
    _products([x.to(torch.float64)], count, sources, torch.device("cpu"))
    t_prod_chunk = time.perf_counter() - t0
    del x
    res["files"] = {"measured": measured, "bytes_each": 4 * m, "write_seconds_each": t_write / measured,
                    "read_seconds_each": t_read / measured, "chunk": c, "chunks": chunks,
                    "product_seconds_per_chunk": t_prod_chunk}
    rank_total = sources * res["rank_source"]["seconds"] + targets * res["rank_target"]["seconds"]
    write_total = count * t_write / measured
    product_total = count * t_read / measured + chunks * t_prod_chunk
    res["projection"] = {"rank_seconds": rank_total, "write_seconds": write_total, "product_seconds": product_total,
                         "total_seconds": rank_total + write_total + product_total,
                         "disk_bytes": count * 4 * m, "on_disk": not p["in_memory"]}
    if job:
        from scipy.stats import spearmanr

        reps_s = [_zscored(n, d, 64, gen) for _ in range(job[0])]
        reps_t = [_zscored(n, v, 32, gen) for _ in range(job[1])]
        base = proc_bytes("VmRSS")
        reset = _reset_peak()
        st = {}
        t0, c0 = time.perf_counter(), time.process_time()
        rho = rsa_spearman_scores(reps_s, reps_t, max_bytes=budget, workdir=workdir, stats=st)
        res["job_at_n"] = {"sources": job[0], "targets": job[1], "seconds": time.perf_counter() - t0,
                           "cpu_seconds": time.process_time() - c0,
                           "peak_above_base": proc_bytes("VmHWM") - base if reset else None,
                           "rank_seconds": st["rank_seconds"], "product_seconds": st["product_seconds"],
                           "on_disk": st["on_disk"], "chunk": st["chunk"], "disk_bytes": st["disk_bytes"],
                           "workdir_removed": st["workdir"] is None or not os.path.exists(st["workdir"])}
        ref = spearmanr(condensed_rdm(reps_s[0]).numpy(), condensed_rdm(reps_t[0]).numpy())[0]
        res["job_at_n"]["rho_00"] = float(rho[0, 0])
        res["job_at_n"]["scipy_rho_00"] = float(ref)
        del reps_s, reps_t
    if small_n:
        reps_s = [_zscored(small_n, d, 64, gen) for _ in range(sources)]
        reps_t = [_zscored(small_n, v, 32, gen) for _ in range(targets)]
        base = proc_bytes("VmRSS")
        reset = _reset_peak()
        st: dict = {}
        t0, c0 = time.perf_counter(), time.process_time()
        rho = rsa_spearman_scores(reps_s, reps_t, max_bytes=budget, workdir=workdir, stats=st)
        res["small_job"] = {"n": small_n, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                            "peak_above_base": proc_bytes("VmHWM") - base if reset else None,
                            "rank_seconds": st["rank_seconds"], "product_seconds": st["product_seconds"],
                            "on_disk": st["on_disk"], "ranges": st["ranges"], "finite": bool(np.isfinite(rho).all())}
    res["load_average_end"] = os.getloadavg()
    return res


if __name__ == "__main__":  # python -m brainalign.alignment.rsa [n]
    import json
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(bench_rsa_spearman(*(int(a) for a in sys.argv[1:2])), indent=1, default=str))
