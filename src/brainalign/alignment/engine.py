"""The streaming alignment engine behind :func:`brainalign.alignment.metrics.score_matrices`.

Every metric of every (source, target) pair is a sum over the stimulus x stimulus
plane, or over each row's neighbours, so a job streams that plane in blocks of
``b`` whole rows and never holds an n x n matrix:

* each representation is z-scored once (float64, n x d);
* **pass 1** (only when a neighbour metric is asked for): per row block, the float64
  Gram rows ``Z[rows] @ Z.T`` of every source give its exact top-k neighbours at the
  largest k; targets get theirs at CKNNA's largest k. The lists are inverted once
  (for each stimulus j, the stimuli whose lists hold j, and at which rank), so that
  "is i among j's neighbours" is a lookup;
* **pass 2**, per row block: Gram rows of every representation again; from them the
  squared distances, the targets' neighbours at the largest k, and every neighbour
  metric of the block's rows (O(k) entries per pair and row); then, for each sigma,
  every representation's RBF kernel block over the columns from the block's first row
  on (the kernels are symmetric: the upper triangle of the plane is enough, see
  :class:`_CKA`), approximately centred, and all (source, target) products of the
  block as one matrix product of the stacked flattened blocks, summed in float64 over
  blocks.

CKA's centring. ``HSIC(K, L) = sum(HKH * HLH)`` is unchanged when K is replaced by
``K~ = K - a 1' - 1 a' + c`` for any vector a and scalar c (H kills both), and then
``HSIC = <K~, L~> - (2/n) <R_K, R_L> + T_K T_L / n^2`` with ``R`` the row sums of
``K~`` and ``T`` their total, both collected exactly as the blocks go by. So the
result does not depend on ``a``: it is chosen as each row's mean over a fixed sample
of columns (:data:`CENTRE_SAMPLE`), which makes ``K~`` nearly centred and keeps the
float32 products of the blocks free of cancellation.

With a brain summary (:mod:`brainalign.alignment.summary`) the targets' lists, values and sums are read,
not computed, and in a float32 job (no ridge, rsa_spearman or rsa_pearson) the sources are held
compactly: each runs pass 1 alone as it is read (:func:`own_neighbours`: its float64 Gram matrix over
the upper triangle where it fits, its exact lists and its Gram values at CKNNA's k), and is then kept
as float32 z-scores, so pass 2 forms no Gram rows at all: every representation's squared distances
come from one float32 product per kernel sub-block (:func:`kernel_rows`), CKNNA reads the stored
values, the sources' inverted lists are held a quarter of the stimuli at a time
(:class:`ChunkedInverse`), and the targets' rbf kernels are formed as ``L / c - 1`` (c their mean
estimate; three passes, where forming and centring takes four), their centring applied to the products
once at the end.

Neighbours. Inner products are rounded to :data:`TIE_TOLERANCE` times the largest one,
then ties go to the lowest index, with one exact float64 key per entry; a block's
rows are first cut to their ``k + CANDIDATE_MARGIN`` largest raw inner products and
only rows whose margin does not clear the k-th rounded value (heavy ties) are keyed
in full. Results are therefore exactly those of a full sort, on any device.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from brainalign.io import Progress, release_memory

log = logging.getLogger(__name__)

TIE_TOLERANCE = 1e-9
CANDIDATE_MARGIN = 8
CENTRE_SAMPLE = 256
ACCUMULATE_BLOCK = 1 << 20  # float32 partial sums over at most 2^20 terms, then float64
EPS_CKA = 1e-6
MIN_GROUP_BYTES = 256 << 20  # the smallest group of sources' z-scores (see source_groups)
KERNEL_BLOCK_BYTES = 256 << 20  # the distances of a kernel sub-block (see kernel_rows)
INVERSE_CHUNKS = 4  # a compact job holds its sources' inverted lists for n / INVERSE_CHUNKS stimuli (ChunkedInverse)
BIG = 32767  # the rank of a stimulus that is not among the neighbours (int16)


# ----------------------------------------------------------------------------- small pieces




def index_dtype(n: int):
    """Compact storage for stimulus indices: int16 below 32,768 stimuli, else int32."""
    import torch

    return torch.int16 if n <= 32767 else torch.int32


def tie_shift(n: int) -> float:
    """The power of two that the rounded inner product is multiplied by in the neighbour key."""
    shift = float(1 << max(1, math.ceil(math.log2(n))))
    if shift / TIE_TOLERANCE >= 2.0**53:
        raise ValueError(f"n = {n} stimuli is too many for exact neighbour keys (at most ~8 million)")
    return shift


def block_neighbours(g, r0: int, k: int, scale: float, shift: float):
    """Exact top-``k`` neighbours of the rows of a Gram block, self excluded.

    ``g`` (b, n) holds the inner products of stimuli ``r0 .. r0 + b - 1`` with all n
    stimuli (float64); it is overwritten. Values are rounded to multiples of
    ``scale``, ties go to the lowest index. Returns (b, k) int64, best first.
    """
    import torch

    b, n = g.shape
    rows = torch.arange(b, device=g.device)
    g[rows, r0 + rows] = float("-inf")
    m = min(n - 1, k + CANDIDATE_MARGIN)
    val, cand = torch.topk(g, m, dim=1, sorted=False)
    q = torch.round(val / scale)
    key = q * shift + (n - 1 - cand).to(q.dtype)
    sel = torch.topk(key, k, dim=1).indices
    idx = cand.gather(1, sel)
    if m < n - 1:
        # a row is exact when its last candidate is strictly below its k-th pick once rounded:
        # every other stimulus has an inner product no larger than that candidate's
        unsure = torch.nonzero(q.amin(1) >= q.gather(1, sel[:, -1:]).squeeze(1)).squeeze(1)
        if unsure.numel():
            cols = torch.arange(n, device=g.device, dtype=torch.float64)
            full = torch.round(g[unsure] / scale) * shift + (n - 1 - cols)[None, :]
            idx[unsure] = torch.topk(full, k, dim=1).indices
    return idx


@dataclass
class Inverse:
    """The neighbour lists of one representation, inverted: for each stimulus j, the
    stimuli i whose lists hold j (``rows``) and j's rank there (``ranks``), j by j."""

    offsets: object  # (n + 1,) int64
    rows: object  # (n k,) compact index
    ranks: object  # (n k,) int16

    @classmethod
    def of(cls, lists):
        return cls.of_range(lists, 0, lists.shape[0])

    def block(self, r0: int, r1: int):
        """Entries of stimuli j in [r0, r1): (j - r0, i, rank of j in i's list), int64 / int16."""
        import torch

        e0, e1 = int(self.offsets[r0]), int(self.offsets[r1])
        counts = self.offsets[r0 + 1 : r1 + 1] - self.offsets[r0:r1]
        local = torch.repeat_interleave(torch.arange(r1 - r0, device=counts.device), counts)
        return local, self.rows[e0:e1].long(), self.ranks[e0:e1]

    @classmethod
    def of_range(cls, lists, lo: int, hi: int):
        """The inverse of the stimuli j in [lo, hi) only (``block`` then takes rows relative to lo): j by j,
        and for each j its entries in list order (row i, then rank)."""
        import torch

        k = lists.shape[1]
        flat = lists.reshape(-1)
        pos = ((flat >= lo) & (flat < hi)).nonzero().squeeze(1)
        j = flat[pos].long() - lo
        pos = pos[torch.argsort(j, stable=True)]
        offsets = torch.zeros(hi - lo + 1, dtype=torch.int64, device=lists.device)
        offsets[1:] = torch.cumsum(torch.bincount(j, minlength=hi - lo), 0)
        return cls(offsets, (pos // k).to(lists.dtype), (pos % k).to(torch.int16))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.offsets, self.rows, self.ranks))


class ChunkedInverse:
    """:class:`Inverse`'s ``block`` for row blocks visited in increasing order, from the inverse of one
    range of at least ``rows`` stimuli at a time (rebuilt from the lists when a block leaves it): the
    job holds ``rows / n`` of the inverse (:data:`INVERSE_CHUNKS`)."""

    def __init__(self, lists, rows: int):
        self.lists, self.rows = lists, rows
        self.lo = self.hi = 0
        self.inv = None

    def block(self, r0: int, r1: int):
        if self.inv is None or r0 < self.lo or r1 > self.hi:
            self.inv = None  # (before the next one is built)
            self.lo, self.hi = r0, min(self.lists.shape[0], r0 + max(self.rows, r1 - r0))
            self.inv = Inverse.of_range(self.lists, self.lo, self.hi)
        return self.inv.block(r0 - self.lo, r1 - self.lo)


def dense_ranks(lists_block, n: int):
    """(b, n) int16: the rank of column j in row i's list, BIG where j is not in it."""
    import torch

    b, k = lists_block.shape
    out = torch.full((b, n), BIG, dtype=torch.int16, device=lists_block.device)
    ranks = torch.arange(k, dtype=torch.int16, device=lists_block.device).expand(b, k)
    return out.scatter_(1, lists_block.long(), ranks)


def dense_inverse_ranks(entries, b: int, n: int):
    """(b, n) int16 from a block's inverse entries (:meth:`Inverse.block`): the rank of row
    stimulus j in column stimulus i's list, or BIG."""
    import torch

    local, cols, ranks = entries
    out = torch.full((b, n), BIG, dtype=torch.int16, device=cols.device)
    out[local, cols] = ranks
    return out


def inner_products(a, b):
    """``a @ b.T`` in float64; float32 inputs are multiplied blockwise, sums kept in float64."""
    import torch

    if a.dtype == torch.float64:
        return a @ b.T
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[1], ACCUMULATE_BLOCK):
        out += (a[:, s : s + ACCUMULATE_BLOCK] @ b[:, s : s + ACCUMULATE_BLOCK].T).double()
    return out


def unbiased_hsic(cross, sum_k, sum_l, sum_kl, n: int):
    """Song et al. 2012 eq. 5 from its four sums (taken on zero-diagonal kernels)."""
    return (cross + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * sum_kl / (n - 2)) / (n * (n - 3))


# ----------------------------------------------------------------------------- the job


@dataclass
class Rep:
    """One z-scored representation: features (n, d) float64 and squared row norms."""

    z: object
    sq: object
    scale: float  # neighbour rounding unit: TIE_TOLERANCE x the largest inner product
    constant: bool = False  # the same value for every stimulus (a blank parcel, a dead layer)
    # a source whose pass 1 ran on its own (:func:`own_neighbours`): its neighbour lists (n, k_max) and
    # its float64 Gram values at their first k_cknna (n, k_cknna); its z-scores are then float32
    lists: object = None
    vals: object = None


def prepare(x, device, single: bool = False) -> Rep:
    """z-score (unbiased std, eps 1e-8) in float64 on ``device``; with ``single``, the z-scores
    are then held in float32 (a target whose neighbour lists and sums come from a brain summary
    only feeds float32 kernel blocks), squared norms still in float64."""
    import torch

    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(device=device, dtype=torch.float64)
    z = (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + 1e-8)
    del x
    if single:
        z = z.float()
        sq = (z.double() ** 2).sum(1)
        top = float(sq.max())
        return Rep(z=z, sq=sq, scale=max(top, float(torch.finfo(torch.float64).tiny)) * TIE_TOLERANCE,
                   constant=top == 0.0)
    sq = (z * z).sum(1)
    # |<zi, zj>| <= max_i |zi|^2, reached on the diagonal
    top = float(sq.max())
    scale = max(top, float(torch.finfo(torch.float64).tiny)) * TIE_TOLERANCE
    return Rep(z=z, sq=sq, scale=scale, constant=top == 0.0)


def own_neighbours(rep: Rep, plan: Plan, n: int, b: int, clock: _Clock | None = None,
                   max_bytes: int = 0) -> None:
    """Pass 1 of one source on its own, then its z-scores in float32 (a job reading a brain summary).

    The exact neighbour lists (k_max, from the float64 Gram rows, :func:`block_neighbours`) and the
    float64 Gram values at their first k_cknna are all that the neighbour metrics need of a source: its
    pass 2 then forms float32 distances for the kernel blocks only (:meth:`_CKA.distances_single`), and
    the job holds 4 bytes a feature of it, not 8. ``b`` rows of Gram at a time. Where its whole Gram
    matrix (``8 n^2`` bytes) fits ``max_bytes``, it is formed over the upper triangle and mirrored (half
    the products: every value is then the same in both places)."""
    import torch

    if plan.k_max:
        cdt, shift = index_dtype(n), tie_shift(n)
        lists = torch.empty(n, plan.k_max, dtype=cdt, device=rep.z.device)
        vals = torch.empty(n, plan.k_cknna, dtype=torch.float64, device=rep.z.device) if plan.k_cknna else None
        gbuf = torch.empty(min(b, n), n, dtype=torch.float64, device=rep.z.device)
        whole = None
        if 8 * n * n <= max_bytes:
            whole = torch.empty(n, n, dtype=torch.float64, device=rep.z.device)
            for r0 in range(0, n, b):
                r1 = min(n, r0 + b)
                g = _head(gbuf, r1 - r0, n - r0)
                torch.mm(rep.z[r0:r1], rep.z[r0:].T, out=g)
                whole[r0:r1, r0:] = g
                whole[r1:, r0:r1] = g[:, r1 - r0 :].T
            if clock:
                clock.lap("gram")
        for r0 in range(0, n, b):
            r1 = min(n, r0 + b)
            if whole is not None:
                g = whole[r0:r1]
            else:
                g = gbuf[: r1 - r0]
                torch.mm(rep.z[r0:r1], rep.z.T, out=g)
                if clock:
                    clock.lap("gram")
            idx = block_neighbours(g, r0, plan.k_max, rep.scale, shift)  # (overwrites the diagonal only)
            if vals is not None:
                vals[r0:r1] = g.gather(1, idx[:, : plan.k_cknna])
            lists[r0:r1] = idx.to(cdt)
            if clock:
                clock.lap("neighbours")
        rep.lists, rep.vals = lists, vals
        del gbuf, whole
    rep.z = rep.z.float()


@dataclass
class Plan:
    sigmas: list  # CKA sigmas (metric order)
    cka: list  # their metric names
    mutual: list  # (name, k)
    cycle: list
    cknna: list
    k_max: int  # neighbours per row for mutual / cycle / cknna (0: none)
    k_cknna: int  # CKNNA's largest k (0: none)
    # the stimulus-plane kernels summed as the blocks go by: (metric name, kind, sigma), kind one of
    # 'rbf' (the paper's CKA), 'linear' (linear CKA) and 'rsa' (the RDM's correlations, for rsa_pearson)
    kernels: list = field(default_factory=list)
    ridge: list = field(default_factory=list)  # metric names computed by brainalign.alignment.encoding
    rsa_spearman: list = field(default_factory=list)  # ... by brainalign.alignment.rsa

    @classmethod
    def of(cls, specs) -> Plan:
        fam = {f: [(s.name, s.param) for s in specs if s.family == f] for f in ("cka", "mutual_knn",
                                                                             "cycle_knn", "cknna")}
        ks = [k for f in ("mutual_knn", "cycle_knn", "cknna") for _, k in fam[f]]
        kernels = [(n, "rbf", float(p)) for n, p in fam["cka"]]
        kernels += [(s.name, "linear", 0.0) for s in specs if s.family == "linear_cka"]
        kernels += [(s.name, "rsa", 0.0) for s in specs if s.name == "rsa_pearson"]
        return cls(sigmas=[float(p) for _, p in fam["cka"]], cka=[n for n, _ in fam["cka"]],
                   mutual=fam["mutual_knn"], cycle=fam["cycle_knn"], cknna=fam["cknna"],
                   k_max=max(ks, default=0), k_cknna=max((k for _, k in fam["cknna"]), default=0),
                   kernels=kernels, ridge=[s.name for s in specs if s.family in ("ridge", "ridge_nc")],
                   rsa_spearman=[s.name for s in specs if s.name == "rsa_spearman"])

    @property
    def rsa(self) -> bool:
        """Whether rsa_pearson's kernel is asked for (its pattern correlations need the Gram rows)."""
        return any(kind == "rsa" for _, kind, _ in self.kernels)

    @property
    def plane(self) -> bool:
        """Whether the streaming passes over the stimulus plane run at all."""
        return bool(self.kernels or self.k_max)


@dataclass
class Stats:
    """What a job did: block size, block count, storage dtype, seconds per phase."""

    block_rows: int = 0
    blocks: int = 0
    passes: int = 0
    dtype: str = ""
    fixed_bytes: int = 0
    bytes_per_row: int = 0
    source_groups: int = 1  # the sources were z-scored and streamed in this many groups (see source_groups)
    seconds: dict = field(default_factory=dict)


class _Clock:
    """Seconds per phase; synchronises CUDA only when timing was asked for."""

    def __init__(self, stats: Stats, device, enabled: bool):
        import torch

        self.stats, self.enabled = stats, enabled
        self.sync = (lambda: torch.cuda.synchronize(device)) if str(device).startswith("cuda") else (lambda: None)
        self.t = time.perf_counter()

    def lap(self, phase: str) -> None:
        if not self.enabled:
            return
        self.sync()
        now = time.perf_counter()
        self.stats.seconds[phase] = self.stats.seconds.get(phase, 0.0) + now - self.t
        self.t = now


def _head(buf, rows: int, cols: int):
    """A contiguous (rows, cols) view at the start of a contiguous buffer."""
    return buf.view(-1)[: rows * cols].view(rows, cols)


def kernel_rows(n: int, R: int, itemsize: int, b: int) -> int:
    """Rows of the kernel sub-blocks of a job whose sources hold no Gram rows (:func:`own_neighbours`): as
    many as KERNEL_BLOCK_BYTES of the R representations' distances hold, at least one, at most ``b``."""
    return int(max(1, min(b, KERNEL_BLOCK_BYTES // (R * n * itemsize))))


def memory_plan(n: int, S: int, T: int, plan: Plan, itemsize: int, summary: bool = False,
                compact: bool = False) -> tuple[int, int]:
    """Bytes the job holds whatever the block size (lists, their inverses, per-row sums), and
    bytes per block row (Gram rows, distances, kernels, neighbour gathers). ``summary``: the
    targets' side comes from a brain summary (their lists are read block by block). ``compact``: the
    sources ran pass 1 on their own (:func:`own_neighbours`): no Gram rows, and the distances are
    formed for kernel sub-blocks of at most KERNEL_BLOCK_BYTES (held whatever the block size)."""
    idx = 2 if n <= 32767 else 4
    n_sig = len(plan.kernels)
    fixed = 0
    if plan.k_max and compact:  # source lists, Gram values at their CKNNA lists, inverse of a chunk (or block)
        chunk = -(-n // INVERSE_CHUNKS)
        fixed += S * n * plan.k_max * idx + S * n * plan.k_cknna * 8 + S * chunk * plan.k_max * (idx + 2)
    elif plan.k_max:
        fixed += S * n * plan.k_max * (2 * idx + 2) + S * (n + 1) * 8  # source lists + inverse
    if plan.k_cknna:
        fixed += T * n * plan.k_cknna * ((idx + 2) if summary else (2 * idx + 2)) + T * (n + 1) * 8
    fixed += (S + T) * n_sig * n * (8 + itemsize)  # row sums (float64) and centring estimates
    fixed += (S + T) * n * 8 * 3 + (64 << 20)  # squared norms, row means and norms, slack for small tensors
    per_row = 3 * n * 8 if not compact else 0  # one Gram row block, a float64 scratch, the top-k scratch
    if summary and not compact:
        per_row += n * 4  # the targets' float32 Gram rows
    if n_sig and compact:
        fixed += min(KERNEL_BLOCK_BYTES, n * (S + T) * n * itemsize)  # distances of the kernel sub-blocks
    elif n_sig:
        per_row += (S + T) * n * itemsize  # distances of every representation
    if n_sig:
        if plan.rsa:
            per_row += (S + T) * n * itemsize  # and their pattern correlations
        # the kernel stack (at least one row), and the copy of its diagonal square (at most the stack)
        fixed += 2 * _CKA.STACK_BYTES + (S + T) * n * itemsize
    if plan.mutual:  # the ranks gathered at the targets' lists (int16) and their comparisons
        per_row += T * plan.k_max * 4
    if plan.k_max and compact:  # (an inverse chunk grows to the block when the block is larger)
        per_row += S * plan.k_max * (idx + 2)
    if plan.k_max:
        # target lists (int64), two int16 gathers and two int16 scratch per (target, rank), dense ranks
        per_row += T * plan.k_max * (8 + 8 + 8) + 4 * n * 2
    if plan.k_cknna:
        per_row += T * plan.k_cknna * (8 * 6 + 2 * 4) + T * plan.k_cknna * 24
    return fixed, per_row


def block_rows(n: int, S: int, T: int, plan: Plan, itemsize: int, max_bytes: int,
               summary: bool = False, compact: bool = False) -> tuple[int, int, int]:
    """The row block of a job within ``max_bytes`` (at least one row), and :func:`memory_plan`'s two terms."""
    fixed, per_row = memory_plan(n, S, T, plan, itemsize, summary=summary, compact=compact)
    return int(max(1, min(n, (max_bytes - fixed) // max(per_row, 1)))), fixed, per_row


def held_itemsize(plan: Plan, brain, dtype: str) -> int:
    """Bytes per feature that a job holds of its sources: 4 where they run pass 1 one at a time in float64
    and are then held in float32 (:func:`own_neighbours`: a float32 job reading a brain summary, with no
    metric that reads their float64 z-scores or Gram rows: ridge, rsa_spearman, rsa_pearson), else 8."""
    f64 = plan.ridge or plan.rsa_spearman or plan.rsa
    return 4 if brain is not None and dtype == "float32" and not f64 else 8


def run(sources: Sequence, targets: Sequence, specs, device, max_bytes: int | None, dtype: str,
        stats: dict | None, default_budget: Callable, encoding: dict | None = None,
        voxel_ceilings: Sequence | None = None, brain=None) -> dict[str, np.ndarray]:
    """Scores of every (source, target) pair for each metric spec, see :func:`score_matrices`
    (``default_budget(device)`` gives the budget when ``max_bytes`` is None). ``brain``: the
    targets' :class:`brainalign.alignment.summary.BrainSummary`, whose lists and sums replace the targets'
    side of the passes."""
    import torch

    plan = Plan.of(specs)
    store = getattr(torch, dtype)
    st = Stats(dtype=dtype)
    clock = _Clock(st, device, stats is not None)
    if max_bytes is None:
        max_bytes = default_budget(device)
    # with a summary, the targets only feed kernel blocks: float32 z-scores are enough (ridge and
    # rsa_spearman read them too, and want float64)
    single = brain is not None and store == torch.float32 and not plan.ridge and not plan.rsa_spearman
    tgt = []
    for x in targets:
        tgt.append(prepare(x() if callable(x) else x, device, single=single))
        release_memory()  # the raw copy and the temporaries would stay resident between the z's
    if not sources or not tgt:
        raise ValueError("align needs at least one source and one target representation")
    n = tgt[0].z.shape[0]
    if brain is not None:
        brain.check(plan, n, [r.z for r in tgt])
    itemsize = held_itemsize(plan, brain, dtype)
    compact = itemsize == 4
    groups, work_bytes = source_groups([_width(x) for x in sources], n, max_bytes, itemsize=itemsize)
    st.source_groups = len(groups)
    if len(groups) > 1:
        log.info("%d source representations in %d groups of at most %.2f GB of z-scores (budget %.2f GB): "
                 "the targets' side is computed once per group", len(sources), len(groups), max_bytes / 2e9,
                 max_bytes / 1e9)
    parts, dead_s = [], []
    for group in groups:
        src = []
        if compact:
            b = block_rows(n, len(group), len(tgt), plan, store.itemsize, work_bytes, summary=True)[0]
            progress = Progress(len(group), "alignment pass 1 (neighbour lists, one source at a time)", "sources")
        for i in group:
            src.append(prepare(sources[i]() if callable(sources[i]) else sources[i], device))
            if compact:
                clock.lap("z-score")
                own_neighbours(src[-1], plan, n, b, clock, max_bytes=work_bytes // 2)
                progress.step()
            release_memory()
        part = _score(src, tgt, plan, n, device, work_bytes, store, st, clock, encoding, voxel_ceilings, brain)
        dead_s += [group[0] + i for i, r in enumerate(src) if r.constant]
        parts.append(part)
        del src
        release_memory()
    out = {name: np.concatenate([np.asarray(p[name]) for p in parts], axis=0) for name in parts[0]}
    if stats is not None:
        stats.update(dataclasses.asdict(st))
    dead_t = [j for j, r in enumerate(tgt) if r.constant]
    if dead_s or dead_t:  # no stimulus differs from another there: nothing to align
        for name in out:
            out[name] = np.array(out[name], dtype=np.float64)
            out[name][dead_s, :] = np.nan
            out[name][:, dead_t] = np.nan
        log.warning("%d source(s) %s and %d target(s) %s are constant over the stimuli: their scores are NaN",
                    len(dead_s), dead_s[:5], len(dead_t), dead_t[:5])
    return {s.name: out[s.name] for s in specs}


def _width(x) -> int | None:
    """A source's number of features without loading it (arrays, and loaders with a ``shape``)."""
    shape = getattr(x, "shape", None)
    return int(shape[1]) if shape is not None and len(shape) == 2 else None


def source_groups(widths: Sequence[int | None], n: int, max_bytes: int,
                  itemsize: int = 8) -> tuple[list[list[int]], int]:
    """Consecutive groups of sources, and the working budget of each group's pass.

    When the sources' z-scores (``8 n d`` each in float64; ``itemsize`` 4: held in float32, see
    :func:`own_neighbours`) fit half the budget, or a width is unknown,
    all sources are one group and the streaming gets the whole budget (the z-scores are held beside
    it, as the docstring of :func:`brainalign.alignment.metrics.score_matrices` counts them). Otherwise the
    sources are streamed in groups of at most half the budget of z-scores, read and z-scored group
    by group, and each group's pass works within the other half: the job then holds at most the
    budget beyond the targets, whatever the depth and width of the model. Scores do not depend on
    the grouping (every pair's sums are its own; the neighbour rule is exact). Groups hold at least
    :data:`MIN_GROUP_BYTES` (below that, recomputing the targets' side would cost more than the
    memory is worth), so sources of up to twice that are never split."""
    if any(w is None for w in widths) or itemsize * n * sum(widths) <= max(max_bytes // 2, 2 * MIN_GROUP_BYTES):
        return [list(range(len(widths)))], max_bytes
    half = max(max_bytes // 2, MIN_GROUP_BYTES)
    groups: list[list[int]] = [[]]
    held = 0
    for i, w in enumerate(widths):
        need = itemsize * n * w
        if groups[-1] and held + need > half:
            groups.append([])
            held = 0
        groups[-1].append(i)
        held += need
    return groups, max(max_bytes - half, 1)


def _score(src: list[Rep], tgt: list[Rep], plan: Plan, n: int, device, max_bytes: int, store, st: Stats,
           clock: _Clock, encoding: dict | None, voxel_ceilings, brain=None) -> dict[str, np.ndarray]:
    """Every metric of ``plan`` for one group of sources against every target (z-scored reps)."""
    for name, r in [("source", a) for a in src] + [("target", b) for b in tgt]:
        if r.z.ndim != 2 or r.z.shape[0] != n:
            raise ValueError(f"every {name} must be (n_stimuli, n_features) with n_stimuli = {n}; "
                             f"got {tuple(r.z.shape)}")
    if plan.k_max >= n:
        raise ValueError(f"k = {plan.k_max} needs more than k stimuli, got n = {n}; "
                         "drop that metric or add stimuli")
    if plan.cknna and n < 4:
        raise ValueError(f"CKNNA's unbiased HSIC needs n >= 4 stimuli, got n = {n}")
    clock.lap("z-score")
    out: dict[str, np.ndarray] = {}
    if plan.plane:
        out.update(_plane(src, tgt, plan, n, device, max_bytes, store, st, clock, brain=brain))
    if "ridge_nc" in plan.ridge and voxel_ceilings is None:
        raise ValueError("ridge_nc needs each target voxel's noise ceiling (voxel_ceilings); without them use ridge")
    if plan.ridge:
        from brainalign.alignment.encoding import ridge_scores

        opts = dict(encoding or {})
        res = ridge_scores([r.z for r in src], [r.z for r in tgt], max_bytes=max_bytes,
                           voxel_ceilings=voxel_ceilings if "ridge_nc" in plan.ridge else None, **opts)
        out.update({name: res[name] for name in plan.ridge if name in res})
        clock.lap("ridge")
    if plan.rsa_spearman:
        from brainalign.alignment.rsa import rsa_spearman_scores

        out["rsa_spearman"] = rsa_spearman_scores([r.z for r in src], [r.z for r in tgt], max_bytes=max_bytes)
        clock.lap("rsa_spearman")
    return out


def _plane(src: list[Rep], tgt: list[Rep], plan: Plan, n: int, device, max_bytes: int, store, st: Stats,
           clock: _Clock, brain=None, capture: Callable | None = None) -> dict[str, np.ndarray]:
    """The streaming passes over the stimulus plane: every kernel and neighbour metric.

    ``brain`` (a :class:`brainalign.alignment.summary.BrainSummary` of ``tgt``): the targets' neighbour
    lists, their Gram values there, their CKNNA self sums and their kernels' centring, row sums
    and self products are read from it instead of computed; the targets' Gram rows are then formed
    for the kernel blocks only. ``capture(r0, r1, blk)`` sees each row block's targets' side
    (:class:`_TargetBlock`, after ``finish``): how a summary is computed."""
    import torch

    S, T = len(src), len(tgt)
    # sources whose pass 1 ran on their own (own_neighbours, with a summary of float32 targets): neither
    # side needs Gram rows in this job, and the kernels' distances are formed for sub-blocks of bk rows
    compact = bool(src) and all(r.z.dtype != torch.float64 for r in src)
    b, fixed, per_row = block_rows(n, S, T, plan, store.itemsize, max_bytes, summary=brain is not None,
                                   compact=compact)
    bk = kernel_rows(n, S + T, store.itemsize, b) if compact else b
    if fixed + per_row > max_bytes:
        log.warning("memory budget %.2f GB is below this job's fixed need %.2f GB + one row %.3f GB; "
                    "running one row at a time", max_bytes / 1e9, fixed / 1e9, per_row / 1e9)
    st.block_rows, st.blocks, st.fixed_bytes, st.bytes_per_row = b, -(-n // b), fixed, per_row
    shift = tie_shift(n)

    # ---------------------------------------------------------------- pass 1: neighbour lists
    src_lists = tgt_lists = src_inv = tgt_inv = None
    gbuf = None if compact else torch.empty(b, n, dtype=torch.float64, device=device)
    single = bool(tgt) and tgt[0].z.dtype != torch.float64
    g32 = torch.empty(b, n, dtype=tgt[0].z.dtype, device=device) if single and plan.rsa else None
    if brain is not None:
        tgt_lists, tgt_inv = [], []
        if plan.k_cknna:  # the targets' CKNNA lists, inverted for "is i among j's neighbours"
            for t in range(T):
                tgt_inv.append(Inverse.of(torch.as_tensor(brain.cknna_lists(t, plan.k_cknna)).to(device)))
            release_memory()
    if plan.k_max and compact:
        st.passes += 1  # (run by own_neighbours, source by source)
        src_lists = [r.lists for r in src]
    elif plan.k_max:
        st.passes += 1
        progress = Progress(st.blocks, "alignment pass 1 (neighbour lists)", "row blocks")
        cdt = index_dtype(n)
        src_lists = [torch.empty(n, plan.k_max, dtype=cdt, device=device) for _ in src]
        tgt_lists = ([torch.empty(n, plan.k_cknna, dtype=cdt, device=device) for _ in tgt]
                     if plan.k_cknna and brain is None else [])
        for r0 in range(0, n, b):
            r1 = min(n, r0 + b)
            g = gbuf[: r1 - r0]
            mine = tgt if brain is None else []  # a summary holds the targets' lists
            for reps, lists, k in ((src, src_lists, plan.k_max), (mine, tgt_lists, plan.k_cknna)):
                for rep, out in zip(reps, lists, strict=False):  # no target lists without CKNNA
                    torch.mm(rep.z[r0:r1], rep.z.T, out=g)
                    clock.lap("gram")
                    out[r0:r1] = block_neighbours(g, r0, k, rep.scale, shift).to(cdt)
                    clock.lap("neighbours")
            release_memory()
            progress.step()
    if plan.k_max and compact:  # the sources' inverses a quarter of the stimuli at a time
        src_inv = [ChunkedInverse(x, -(-n // INVERSE_CHUNKS)) for x in src_lists]
    elif plan.k_max:
        src_inv = []
        tgt_inv = [] if brain is None else tgt_inv
        for lists, inv in ((src_lists, src_inv), (tgt_lists if brain is None else [], tgt_inv)):
            for x in lists:
                inv.append(Inverse.of(x))
                release_memory()  # the int64 temporaries would stay resident between the small results
        clock.lap("neighbours")

    # ---------------------------------------------------------------- pass 2: every metric
    st.passes += 1
    progress = Progress(st.blocks, f"alignment pass {st.passes} (metrics)", "row blocks")
    acc = _Accumulators(plan, S, T, n, device)
    cka = _CKA(plan, src + tgt, S, n, bk, store, device, brain) if plan.kernels else None
    clock.lap("exp")
    tmp = torch.empty(b, n, dtype=torch.float64, device=device) if cka and not compact else None
    for r0 in range(0, n, b):
        r1 = min(n, r0 + b)
        bb = r1 - r0
        g = None if compact else gbuf[:bb]
        blk = _TargetBlock(plan, T, bb, bool(src) and _rank_kernel(device, bb * T * plan.k_max)) if plan.k_max else None
        for t, rep in enumerate(tgt):
            if compact or (brain is not None and not cka):
                break  # nothing of the targets' Gram rows is needed (compact: their distances, below)
            if brain is not None:  # for the kernel blocks only: the columns from r0 on
                gt = _head(g, bb, n - r0)
                if single:
                    torch.mm(rep.z[r0:r1], rep.z[r0:].T, out=_head(g32, bb, n - r0))
                    gt.copy_(_head(g32, bb, n - r0))
                else:
                    torch.mm(rep.z[r0:r1], rep.z[r0:].T, out=gt)
                clock.lap("gram")
                cka.distances(S + t, gt, rep, r0, r1, tmp[:bb])
                clock.lap("distances")
                continue
            torch.mm(rep.z[r0:r1], rep.z.T, out=g)
            clock.lap("gram")
            if cka:
                cka.distances(S + t, g, rep, r0, r1, tmp[:bb])
                clock.lap("distances")
            if plan.k_max and brain is None:
                blk.add(t, g, rep, r0, r1, tgt_lists[t] if plan.k_cknna else None,
                        tgt_inv[t] if plan.k_cknna else None, shift, acc)
                clock.lap("neighbours")
        if plan.k_max:
            if brain is None:
                blk.finish()
            else:
                blk.load(brain, r0, r1, tgt_inv, device)
                clock.lap("neighbours")
            if capture is not None:
                capture(r0, r1, blk)
        for s, rep in enumerate(src):
            if compact:  # the neighbour sums from the lists and values; the kernels' distances below
                if plan.k_max:
                    _source_block(s, None, src_lists[s][r0:r1], src_inv[s], r0, r1, blk, plan, acc, n, vals=rep.vals)
                    clock.lap("neighbour metrics")
                continue
            if plan.cknna:  # (mutual and cycle need the lists only)
                torch.mm(rep.z[r0:r1], rep.z.T, out=g)
                clock.lap("gram")
            elif cka:  # for the kernel blocks only: the columns from r0 on
                torch.mm(rep.z[r0:r1], rep.z[r0:].T, out=_head(g, bb, n - r0))
                clock.lap("gram")
            if cka:
                cka.distances(s, g if plan.cknna else _head(g, bb, n - r0), rep, r0, r1, tmp[:bb])
                clock.lap("distances")
            if plan.k_max:
                _source_block(s, g, src_lists[s][r0:r1], src_inv[s], r0, r1, blk, plan, acc, n)
                clock.lap("neighbour metrics")
        del blk
        if cka and compact:  # every representation's distances in float32, a sub-block of bk rows at a time
            for q0 in range(r0, r1, bk):
                q1 = min(r1, q0 + bk)
                for r, rep in enumerate(src + tgt):
                    cka.distances_single(r, rep, q0, q1)
                clock.lap("gram")  # (matrix products, with the norms added in)
                cka.block(q0, q1, clock)
        elif cka:
            cka.block(r0, r1, clock)
        release_memory()
        progress.step()
    if brain is not None:
        for name, _ in plan.cknna:
            acc.self_tgt[name] = torch.as_tensor(brain.cknna_self[name], device=device)
    if capture is not None:
        capture(None, None, (acc, cka))
    out = acc.scores(n)
    if cka:
        out.update(cka.scores())
    clock.lap("products")
    return out


# ----------------------------------------------------------------------------- CKA


class _CKA:
    """Per-kernel sums of one job: block products, self products, row sums of the kernels.

    Kernels (:attr:`Plan.kernels`):

    * ``rbf``: ``exp(-d2 / (2 sigma^2))`` (the paper's CKA);
    * ``linear``: ``-d2 / 2``, which differs from the Gram matrix ``Z Z'`` by row and column
      terms only, so its centred form (and linear CKA) is the Gram's;
    * ``rsa``: the correlation of two stimuli's patterns, ``r_ij = (G_ij - d m_i m_j) / (s_i s_j)``
      from the float64 Gram rows ``G`` (kept beside the distances), m the row means and s the norms
      of the row-centred patterns, minus a constant, with a zero diagonal: rsa_pearson is the Pearson r of
      two RDMs' off-diagonal entries (``1 - r``; both triangles, which leaves r unchanged), from the
      sums of products, entries and squares.

    ``rbf`` and ``linear`` kernels are approximately centred (see :mod:`brainalign.alignment.engine`), ``rsa``
    ones shifted by their sampled mean, so the float32 block products carry no large offsets.

    Every kernel is symmetric, so a block of rows [r0, r1) forms its columns from r0 on only: the
    square [r0, r1) x [r0, r1) and the rectangle to its right, whose transpose (the rows below) is
    never formed. Every sum over the plane is then the square's plus twice the rectangle's; a row's
    sum gathers its own entries from r0 on and, from the blocks above, their rectangles' column sums
    (in float64). Half the plane's distances, exponentials and products.
    """

    # the kernel blocks of every representation are formed for a few rows at a time, so that
    # their stack stays in cache between being written and being multiplied
    STACK_BYTES = 32 << 20

    def __init__(self, plan: Plan, reps: list[Rep], S: int, n: int, b: int, store, device, brain=None):
        import torch

        self.plan, self.S, self.n, self.store = plan, S, n, store
        # with a brain summary the targets' centring, row sums and self products are read, not summed
        self.own = S if brain is not None else len(reps)
        R, n_ker = len(reps), len(plan.kernels)
        self.d2 = torch.empty(R, b, n, dtype=store, device=device)
        self.rows = self.stack_rows(R, n, b, store.itemsize)
        self.kern = torch.empty(R, self.rows * n, dtype=store, device=device)
        self.prod = torch.zeros(n_ker, S, R - S, dtype=torch.float64, device=device)
        self.self_prod = torch.zeros(n_ker, R, dtype=torch.float64, device=device)
        self.rowsum = torch.zeros(n_ker, R, n, dtype=torch.float64, device=device)
        self.rsa = plan.rsa
        # float32 squared norms of the float32 representations (see distances_single)
        self.sq32 = {r: rep.sq.float() for r, rep in enumerate(reps) if rep.z.dtype == torch.float32}
        if self.rsa:
            # the block's pattern correlations (float64 from the Gram rows, then stored), sqrt(d) m_i
            # and 1 / s_i of every stimulus' pattern (row), float64
            self.corr = torch.empty(R, b, n, dtype=store, device=device)
            self.mean_d = torch.empty(R, n, dtype=torch.float64, device=device)
            self.inv_norm = torch.empty(R, n, dtype=torch.float64, device=device)
            for r, rep in enumerate(reps):
                d = rep.z.shape[1]
                m = rep.z.mean(1)
                norm = (rep.sq - d * m * m).clamp_min(0).sqrt()
                if not rep.constant and bool((norm <= 1e-12 * rep.sq.clamp_min(1e-300).sqrt()).any()):
                    side = f"source {r}" if r < S else f"target {r - S}"
                    raise ValueError(f"{side} has stimuli whose pattern is constant (a one-voxel ROI?): correlation "
                                     "distance is undefined there; rsa_* need representations of >= 2 columns")
                self.mean_d[r] = m * math.sqrt(d)
                self.inv_norm[r] = torch.where(norm > 0, 1.0 / norm.clamp_min(1e-300), torch.zeros_like(norm))
        # centring estimate a (each row's mean over a fixed sample of columns) and its mean c:
        # K~ = K - (a_i - c) - a_j (rbf, linear); rsa kernels subtract c only
        cols = torch.unique(torch.linspace(0, n - 1, min(n, CENTRE_SAMPLE), device=device).round().long())
        self.a = torch.zeros(n_ker, R, n, dtype=store, device=device)
        self.c = torch.zeros(n_ker, R, 1, 1, dtype=store, device=device)
        for r, rep in enumerate(reps):
            if r >= self.own:
                t = r - S
                for i, (_, kind, sigma) in enumerate(plan.kernels):
                    j = brain.kernel_index(kind, sigma)
                    self.c[i, r] = float(brain.kernel_c[j][t])
                    if kind != "rsa":  # (rsa kernels are shifted by c alone)
                        self.a[i, r] = torch.as_tensor(brain.kernel_a[j, t], device=device)
                    self.rowsum[i, r] = torch.as_tensor(brain.rowsum[j, t], device=device)
                    self.self_prod[i, r] = float(brain.self_prod[j][t])
                continue
            g = rep.z @ rep.z[cols].T
            d2 = (rep.sq[:, None] + rep.sq[cols][None, :] - 2.0 * g).clamp_min_(0)
            for i, (_, kind, sigma) in enumerate(plan.kernels):
                if kind == "rbf":
                    a = torch.exp(d2 * (-1.0 / (2.0 * sigma * sigma))).mean(1)
                elif kind == "linear":
                    a = (-0.5 * d2).mean(1)
                else:
                    corr = (g - self.mean_d[r][:, None] * self.mean_d[r][cols][None, :])
                    corr *= self.inv_norm[r][:, None] * self.inv_norm[r][cols][None, :]
                    self.c[i, r] = corr.mean()
                    continue
                self.a[i, r] = a
                self.c[i, r] = a.mean()
        for i, (_, kind, _) in enumerate(plan.kernels):
            if kind == "rsa":
                self.rsa_shift = self.c[i].double()
        # -log o of the targets' rbf kernels formed as L / o - 1 (see _kernel): o = their mean estimate c
        # (positive), 1 where it underflows
        off = self.c[:, self.own :].double()
        self.log_off = torch.where(off > 1e-30, off, torch.ones_like(off)).log().neg().to(store)

    @classmethod
    def stack_rows(cls, R: int, n: int, b: int, itemsize: int) -> int:
        """Rows of the kernel stack: as many as fit STACK_BYTES, at least one, at most a block."""
        return int(max(1, min(b, cls.STACK_BYTES // (R * n * itemsize))))

    def distances(self, r: int, g, rep: Rep, r0: int, r1: int, tmp) -> None:
        """Squared distances of block rows to the stimuli from r0 on (the upper triangle's columns), from
        the Gram rows ``g``: (b, n), or (b, n - r0) when only those columns were formed. They are stored
        at columns [0, n - r0) of the block's buffer."""
        import torch

        b, w = r1 - r0, self.n - r0
        if g.shape[1] != w:
            g = g[:, r0:]
        tmp = tmp.view(-1)[: b * w].view(b, w)
        if self.rsa:  # before g is overwritten
            torch.addr(g, self.mean_d[r, r0:r1], self.mean_d[r, r0:], alpha=-1.0, out=tmp)
            tmp.mul_(self.inv_norm[r, r0:r1, None]).mul_(self.inv_norm[r, None, r0:]).sub_(self.rsa_shift[r])
            self.corr[r, :b, :w].copy_(tmp)
        torch.mul(g, -2.0, out=tmp)
        tmp.add_(rep.sq[None, r0:]).add_(rep.sq[r0:r1, None]).clamp_min_(0)
        self._d2(b, w)[r].copy_(tmp)

    def distances_single(self, r: int, rep: Rep, r0: int, r1: int) -> None:
        """:meth:`distances` of a float32 representation (in a job whose sources ran :func:`own_neighbours`,
        every one), in float32 from its z-scores: one matrix product that adds the columns' squared norms,
        then the rows'. (No float64 Gram rows, and no pass to convert them.)"""
        import torch

        b, w = r1 - r0, self.n - r0
        out = self._d2(b, w)[r]
        torch.addmm(self.sq32[r][None, r0:], rep.z[r0:r1], rep.z[r0:].T, beta=1.0, alpha=-2.0, out=out)
        out.add_(self.sq32[r][r0:r1, None]).clamp_min_(0)

    def _d2(self, b: int, w: int):
        """The block's squared distances: (R, b, w), each representation's contiguous."""
        return self.d2.view(self.d2.shape[0], -1)[:, : b * w].view(-1, b, w)

    def _kernel(self, i: int, kind: str, sigma: float, d2, k, q0: int, q1: int, r0: int) -> None:
        """Kernel ``i`` of rows [q0, q1), columns [r0, n), into ``k`` (R, m, n - r0) from their squared
        distances."""
        import torch

        own = self.own
        if kind == "rbf" and own < len(k):
            # the summary's targets (no sums of theirs to form): L / o - 1 = exp(-d2 / (2 sigma^2) - log o) - 1,
            # o their kernel's mean estimate c (values about 0, as centred ones), where centring L takes a
            # row and a column pass; the products are brought back to L~'s at the end (scores). (torch's
            # expm1 is not vectorised on the CPU: 3x exp's time.)
            torch.add(self.log_off[i], d2[own:], alpha=-1.0 / (2.0 * sigma * sigma), out=k[own:])
            k[own:].exp_().sub_(1.0)
            if own:
                torch.mul(d2[:own], -1.0 / (2.0 * sigma * sigma), out=k[:own])
                k[:own].exp_()
                k[:own].sub_(self.a[i, :own, q0:q1, None] - self.c[i, :own]).sub_(self.a[i, :own, None, r0:])
            return
        if kind == "rbf":
            torch.mul(d2, -1.0 / (2.0 * sigma * sigma), out=k)
            k.exp_()
        elif kind == "linear":
            torch.mul(d2, -0.5, out=k)
        else:
            k.copy_(self.corr[:, q0 - r0 : q1 - r0, : k.shape[2]])
            m = q1 - q0
            rows = torch.arange(m, device=k.device)
            k[:, rows, q0 - r0 + rows] = 0.0
            return
        k.sub_(self.a[i, :, q0:q1, None] - self.c[i]).sub_(self.a[i, :, None, r0:])

    def block(self, r0: int, r1: int, clock: _Clock) -> None:
        """Every kernel's blocks and products for rows [r0, r1), columns from r0 on, a few rows at a time."""
        S, n = self.S, self.n
        w, sq = n - r0, r1 - r0  # the block's columns; the square's
        rows = max(1, min(sq, self.rows * n // w))  # as many rows as the stack holds at this width
        for q0 in range(r0, r1, rows):
            q1 = min(r1, q0 + rows)
            m = q1 - q0
            flat = self.kern[:, : m * w]
            k = flat.view(-1, m, w)
            d2 = self._d2(r1 - r0, w)[:, q0 - r0 : q1 - r0]
            for i, (_, kind, sigma) in enumerate(self.plan.kernels):
                self._kernel(i, kind, sigma, d2, k, q0, q1, r0)
                own = k[: self.own]
                self.rowsum[i, : self.own, q0:q1] += own.sum(2)
                if sq == w:  # the last block: a square alone
                    self.self_prod[i, : self.own] += _sq_norms(own)
                    clock.lap("exp")
                    self.prod[i] += inner_products(flat[:S], flat[S:])
                    clock.lap("products")
                    continue
                # the rectangle's columns are rows below: these rows' entries are part of their sums
                self.rowsum[i, : self.own, r1:] += own.sum(1)[:, sq:]
                # sums over the plane: twice the block's, less the square counted once
                square = k[:, :, :sq].reshape(len(k), -1)
                self.self_prod[i, : self.own] += 2.0 * _sq_norms(own) - _sq_norms(square[: self.own, None])
                clock.lap("exp")
                self.prod[i] += 2.0 * inner_products(flat[:S], flat[S:]) - inner_products(square[:S], square[S:])
                clock.lap("products")

    def scores(self) -> dict[str, np.ndarray]:
        n, S = self.n, self.S
        rowsum = self.rowsum
        total = rowsum.sum(2)  # (n_ker, R)
        out = {}
        for i, (name, kind, _) in enumerate(self.plan.kernels):
            rs, tot = rowsum[i], total[i]
            if kind == "rsa":  # Pearson r over the n (n - 1) off-diagonal entries
                m = float(n) * (n - 1)
                cov = m * self.prod[i] - tot[:S, None] * tot[None, S:]
                var = m * self.self_prod[i] - tot * tot
                out[name] = (cov / (var[:S, None] * var[None, S:]).sqrt()).clamp(-1.0, 1.0).cpu().numpy()
                continue
            prod = self.prod[i]
            if kind == "rbf" and self.own < len(rs):
                # the blocks held the targets' L / o - 1 (see _kernel): with K~ symmetric, of row sums R,
                # sum K~ L = o (sum K~ (L / o - 1) + sum K~), and L~_ij = L_ij - a'_i - a'_j + c' gives
                # sum K~ L~ = sum K~ L - 2 a'.R + c' sum K~ (float64)
                a_t, c_t = self.a[i, S:].double(), self.c[i, S:, 0, 0].double()
                off = self.log_off[i, :, 0, 0].double().neg().exp()
                prod = off[None, :] * (prod + tot[:S, None]) - 2.0 * rs[:S] @ a_t.T + tot[:S, None] * c_t[None, :]
            cross = rs[:S] @ rs[S:].T
            hsic = prod - (2.0 / n) * cross + tot[:S, None] * tot[None, S:] / n**2
            selfh = self.self_prod[i] - (2.0 / n) * (rs * rs).sum(1) + tot * tot / n**2
            eps = EPS_CKA if kind == "rbf" else 0.0  # linear CKA: the definition, no epsilon
            out[name] = (hsic / ((selfh[:S, None] * selfh[None, S:]).sqrt() + eps)).cpu().numpy()
        return out


def _sq_norms(k):
    """Sum of squares of each representation's kernel block (R, m, n), in float64."""
    import torch

    return torch.linalg.vector_norm(k, dim=(1, 2)).double() ** 2


# ----------------------------------------------------------------------------- neighbour metrics


class _Accumulators:
    """Integer counts (mutual, cycle) and float64 sums (CKNNA) per (source, target)."""

    def __init__(self, plan: Plan, S: int, T: int, n: int, device):
        import torch

        self.plan = plan
        self.mutual = {name: torch.zeros(S, T, dtype=torch.int64, device=device) for name, _ in plan.mutual}
        self.cycle = {name: torch.zeros(S, T, dtype=torch.int64, device=device) for name, _ in plan.cycle}
        # CKNNA: cross, sum K~, sum L~, sum K~L~ per pair, and the four sums of each side alone
        self.cknna = {name: torch.zeros(4, S, T, dtype=torch.float64, device=device) for name, _ in plan.cknna}
        self.self_src = {name: torch.zeros(3, S, dtype=torch.float64, device=device) for name, _ in plan.cknna}
        self.self_tgt = {name: torch.zeros(3, T, dtype=torch.float64, device=device) for name, _ in plan.cknna}

    def scores(self, n: int) -> dict[str, np.ndarray]:
        out = {}
        for name, k in self.plan.mutual:
            out[name] = (self.mutual[name].double() / (n * k)).cpu().numpy()
        for name, _ in self.plan.cycle:
            out[name] = (self.cycle[name].double() / n).cpu().numpy()
        for name, _ in self.plan.cknna:
            cross, sk, sl, skl = self.cknna[name]
            hsic = unbiased_hsic(cross, sk, sl, skl, n)
            ss, st = (unbiased_hsic(a[0], a[1], a[1], a[2], n) for a in (self.self_src[name], self.self_tgt[name]))
            out[name] = (hsic / ((ss[:, None] * st[None, :]).sqrt() + EPS_CKA)).cpu().numpy()
        return out


def _cknna_ks(plan: Plan, device):
    """CKNNA's ks as a (1, number of k) int16 row, for comparisons with ranks."""
    import torch

    return torch.tensor([[k for _, k in plan.cknna]], dtype=torch.int16, device=device)


def _self_cknna(acc: dict, which: int, g, lists_block, entries, back_dense, plan: Plan, vals=None, r0: int = 0):
    """The unbiased-HSIC sums of one representation's own masked kernel (K * M_X) for block rows.

    ``g`` (b, n) are the block's Gram rows, ``entries`` and ``back_dense`` its inverted lists
    (:meth:`Inverse.block`, :func:`dense_inverse_ranks`; ranks below CKNNA's largest k). cross = sum
    K_ij^2 [j in NN(i)] [i in NN(j)]; total = sum K_ij [j in NN(i)]; sum_kk = sum_j col_j row_j, col_j =
    sum_i K_ij [j in NN(i)]. Or, ``g`` None, the Gram values at every row's first k_cknna neighbours
    ``vals`` (n, k_cknna) (:func:`own_neighbours`; the block's rows from ``r0``).
    """
    import torch

    local, cols, ranks = entries
    b = lists_block.shape[0]
    # K_ji = K_ij for the stimuli i whose lists hold block row j
    kvals = g.view(-1).index_select(0, local * g.shape[1] + cols) if vals is None else vals[cols, ranks.long()]
    ks = _cknna_ks(plan, lists_block.device)
    # every k's column sums in one pass over the entries: (b, number of k)
    cols_k = torch.zeros(b, len(plan.cknna), dtype=torch.float64, device=lists_block.device).index_add_(
        0, local, kvals[:, None] * (ranks[:, None] < ks))
    for q, (name, k) in enumerate(plan.cknna):
        idx = lists_block[:, :k].long()
        kv = g.gather(1, idx) if vals is None else vals[r0 : r0 + b, :k]
        back = back_dense.gather(1, idx) < k  # i among the k neighbours of j
        col = cols_k[:, q]
        sums = acc[name][:, which]
        sums[0] += (kv * kv * back).sum()
        sums[1] += kv.sum()
        sums[2] += (col * kv.sum(1)).sum()


class _TargetBlock:
    """What every source needs of the targets for one row block: their neighbour lists (all
    ranks, and CKNNA's prefix), Gram values there, and the inverted CKNNA lists."""

    def __init__(self, plan: Plan, T: int, b: int, kernel: bool = False):
        self.plan, self.T, self.b = plan, T, b
        self.kernel = kernel  # the sources' sums run in the compiled kernels (:func:`_rank_kernel`)
        self.lists = [None] * T  # (b, k_max) int64
        self.cknna_lists = [None] * T  # (b, k_cknna) int64
        self.cknna_vals = [None] * T  # L_ij at them, float64
        self.cknna_back = [None] * T  # rank of i in L's list of j (j = the neighbour), int16
        self.entries = [None] * T  # inverse entries of the block rows: (local j, i, rank)

    def add(self, t: int, g, rep: Rep, r0: int, r1: int, lists_cknna, inv: Inverse | None, shift: float,
            acc: _Accumulators) -> None:
        plan, n = self.plan, g.shape[1]
        if plan.k_cknna:
            own = lists_cknna[r0:r1].long()
            entries = inv.block(r0, r1)
            back = dense_inverse_ranks(entries, r1 - r0, n)
            self.cknna_lists[t] = own
            self.cknna_vals[t] = g.gather(1, own)
            self.cknna_back[t] = back.gather(1, own)
            self.entries[t] = entries
            _self_cknna(acc.self_tgt, t, g, own, entries, back, plan)
        if plan.mutual or plan.cycle:
            self.lists[t] = block_neighbours(g, r0, plan.k_max, rep.scale, shift)  # overwrites g

    def ent_flat(self, n: int):
        """The inverse entries' flat positions in a (b, n) block, computed once per block."""
        if getattr(self, "_ent_flat", None) is None:
            self._ent_flat = self.ent_local * n + self.ent_cols
        return self._ent_flat

    def _stacked(self, local, cols, ranks) -> None:
        """The targets' inverse entries of the block rows, concatenated target by target (row by row
        within a target: :meth:`Inverse.block`); for the compiled kernel, numpy arrays and the first
        entry of each (target, row)."""
        import torch

        b, T = self.b, self.T
        tid = torch.cat([torch.full_like(x, t) for t, x in enumerate(local)])
        self.ent_slot = tid * b + torch.cat(local)
        self.ent_cols, self.ent_ranks = torch.cat(cols), torch.cat(ranks)
        if self.kernel:
            self.slots = np.zeros(T * b + 1, np.int64)
            np.cumsum(np.bincount(self.ent_slot.numpy(), minlength=T * b), out=self.slots[1:])
            self.ent_cols, self.ent_ranks = self.ent_cols.numpy(), self.ent_ranks.numpy()
            self.flat_c, self.back_c, self.vals_c = (np.ascontiguousarray(x.cpu().numpy()) for x in
                                                     (self.flat_c, self.back_c, self.vals_c))
        else:
            self.ent_local = torch.cat(local)

    def load(self, brain, r0: int, r1: int, inv: list, device) -> None:
        """The block's targets' side from a brain summary, as :meth:`finish` leaves it."""
        import torch

        plan, b, T = self.plan, r1 - r0, self.T
        if plan.mutual or plan.cycle:
            lists = np.ascontiguousarray(brain.lists_block(r0, r1, plan.k_max)).reshape(b, -1)
            # the compiled kernel reads the stored index dtype; torch's gathers want int64
            self.flat = lists if self.kernel else torch.as_tensor(lists, device=device).long()
        self.lists = None
        if plan.k_cknna:
            kc = plan.k_cknna
            own = torch.as_tensor(brain.cknna_block(r0, r1, kc), device=device).long()  # (b, T, kc)
            self.flat_c = own.reshape(b, -1)
            self.vals_c = torch.as_tensor(brain.vals_block(r0, r1, kc), device=device)
            backs, entries = [], []
            for t in range(T):
                e = inv[t].block(r0, r1)
                backs.append(dense_inverse_ranks(e, b, brain.n).gather(1, own[:, t]))
                entries.append(e)
            self.back_c = torch.stack(backs, 1)
            self._stacked(*zip(*entries, strict=True))
        self.cknna_lists = self.cknna_vals = self.cknna_back = self.entries = None

    def finish(self) -> None:
        """Stack the per-target pieces: (b, T * k) index matrices for one gather per source."""
        import torch

        b = self.b
        if self.plan.mutual or self.plan.cycle:
            self.flat = torch.stack(self.lists, 1).reshape(b, -1)
            if self.kernel:
                self.flat = self.flat.numpy()
            self.lists = None
        if self.plan.k_cknna:
            self.flat_c = torch.stack(self.cknna_lists, 1).reshape(b, -1)
            self.vals_c = torch.stack(self.cknna_vals, 1)  # (b, T, kc)
            self.back_c = torch.stack(self.cknna_back, 1)
            self._stacked(*zip(*self.entries, strict=True))
            self.cknna_lists = self.cknna_vals = self.cknna_back = self.entries = None


#: the sources' neighbour metrics (mutual_knn's and cycle_knn's counts, CKNNA's sums) in the compiled kernels of
#: :mod:`brainalign.alignment.rank_counts` on the CPU: None - for row blocks of at least RANK_KERNEL_ENTRIES
#: list entries (below that the torch gathers cost less than loading numba, ~1 s and ~0.12 GB a process);
#: True - always; False - never (the tests compare the two paths)
RANK_KERNEL: bool | None = None
RANK_KERNEL_ENTRIES = 1 << 21


def _rank_kernel(device, entries: int) -> bool:
    import torch

    if RANK_KERNEL is False or torch.device(device).type != "cpu" or (
            RANK_KERNEL is None and entries < RANK_KERNEL_ENTRIES):
        return False
    from brainalign.alignment.rank_counts import available

    return available()


def _source_block(s: int, g, lists_block, inv: Inverse, r0: int, r1: int, blk: _TargetBlock, plan: Plan,
                  acc: _Accumulators, n: int, vals=None) -> None:
    """Every neighbour metric of source ``s`` against every target, on the block's rows.

    CKNNA reads the source's kernel in its Gram rows ``g`` (b, n), or, ``g`` None, in ``vals`` (n,
    k_cknna): its Gram values at each stimulus' first k_cknna neighbours (:func:`own_neighbours`), where
    every entry of its masks lies.

    With rx = the rank, in X's list of i, of Y's p-th neighbour j of i, and rt = the rank
    of i in X's list of j: mutual_k counts p < k with rx < k; cycle_k holds when some
    p < k has rt < k; CKNNA's mask M_ij is [p < k][rx < k], its transpose M_ji
    [rt < k][i in Y's list of j].
    """
    b = r1 - r0
    fwd = dense_ranks(lists_block, n) if plan.k_cknna or plan.mutual else None
    entries = back = None
    if plan.cycle or plan.k_cknna:
        entries = inv.block(r0, r1)
        back = dense_inverse_ranks(entries, b, n)
    if blk.kernel:
        _source_block_compiled(s, g, fwd, back, blk, plan, acc, vals, r0)
    else:
        _source_block_torch(s, g, fwd, back, blk, plan, acc, n, vals, r0)
    if plan.k_cknna:
        kc_max = plan.k_cknna
        local, cols, ranks = entries
        if plan.k_max > kc_max:  # the sums look at ranks below CKNNA's largest k only
            keep = ranks < kc_max
            local, cols, ranks = local[keep], cols[keep], ranks[keep]
        _self_cknna(acc.self_src, s, g, lists_block[:, :kc_max], (local, cols, ranks), back, plan, vals, r0)


def _source_block_compiled(s: int, g, fwd, back, blk: _TargetBlock, plan: Plan, acc: _Accumulators, vals=None,
                           r0: int = 0) -> None:
    """:func:`_source_block`'s cross counts and sums in the compiled kernels (CPU)."""
    import torch

    from brainalign.alignment.rank_counts import cknna_sums, rank_counts

    if plan.mutual or plan.cycle:
        mut, cyc = rank_counts(blk.flat, fwd.numpy() if plan.mutual else None,
                               back.numpy() if plan.cycle else None, blk.T, plan.k_max,
                               [k for _, k in plan.mutual], [k for _, k in plan.cycle])
        for q, (name, _) in enumerate(plan.mutual):
            acc.mutual[name][s] += torch.from_numpy(mut[:, q]).to(torch.int64)
        for q, (name, _) in enumerate(plan.cycle):
            acc.cycle[name][s] += torch.from_numpy(cyc[:, q]).to(torch.int64)
    if plan.k_cknna:
        sums = cknna_sums(blk.flat_c, blk.back_c, blk.vals_c, fwd.numpy(), back.numpy(),
                          None if g is None else g.numpy(), blk.slots, blk.ent_cols, blk.ent_ranks,
                          [k for _, k in plan.cknna], None if vals is None else vals.numpy(), r0)  # (T, 4, number of k)
        for q, (name, _) in enumerate(plan.cknna):
            acc.cknna[name][:, s] += torch.from_numpy(sums[:, :, q].T)


def _source_block_torch(s: int, g, fwd, back, blk: _TargetBlock, plan: Plan, acc: _Accumulators, n: int,
                        vals=None, r0: int = 0) -> None:
    """:func:`_source_block`'s cross counts and sums with torch gathers (any device)."""
    import torch

    b, T = blk.b, blk.T
    if plan.mutual or plan.cycle:
        k = plan.k_max
        if plan.mutual:
            rx = fwd.gather(1, blk.flat).view(b, T, k)
            for name, km in plan.mutual:
                acc.mutual[name][s] += (rx[:, :, :km] < km).sum(2, dtype=torch.int32).sum(0)
            del rx
        if plan.cycle:
            pos = torch.arange(k, dtype=torch.int16, device=back.device)
            first = torch.maximum(back.gather(1, blk.flat).view(b, T, k), pos).amin(2)  # (b, T)
            for name, kc in plan.cycle:
                acc.cycle[name][s] += (first < kc).sum(0)
            del first
    if plan.k_cknna:
        kc_max = plan.k_cknna
        rx = fwd.gather(1, blk.flat_c).view(b, T, kc_max)
        rt = back.gather(1, blk.flat_c).view(b, T, kc_max)
        # K_ij at Y's neighbours j of i (those beyond X's first k_cknna are masked below)
        if vals is None:
            kv_all = g.gather(1, blk.flat_c).view(b, T, kc_max)
        else:
            kv_all = vals[r0 : r0 + b].gather(1, rx.view(b, -1).clamp(max=kc_max - 1).long()).view(b, T, kc_max)
        ent = blk.ent_flat(n)
        # for Y's inverse entries (j in the block, i with j in Y's list of i): max of j's rank in
        # Y's list of i and in X's list of i, and K_ji (= K_ij, at that rank of i's values)
        back_e = back.view(-1).index_select(0, ent)
        worst_e = torch.maximum(back_e, blk.ent_ranks)
        if vals is None:
            k_e = g.view(-1).index_select(0, ent)
        else:
            k_e = vals[blk.ent_cols, back_e.clamp(max=kc_max - 1).long()]
        rt = torch.maximum(rt, blk.back_c)
        ks = _cknna_ks(plan, back.device)
        # every k's column sums in one pass over the entries: (T b, number of k)
        cols_k = torch.zeros(T * b, len(plan.cknna), dtype=torch.float64, device=back.device).index_add_(
            0, blk.ent_slot, k_e[:, None] * (worst_e[:, None] < ks))
        for q, (name, k) in enumerate(plan.cknna):
            mij = rx[:, :, :k] < k
            mji = rt[:, :, :k] < k
            kv = kv_all[:, :, :k] * mij
            lv = blk.vals_c[:, :, :k] * mij
            col = cols_k[:, q].view(T, b)
            sums = acc.cknna[name][:, s]
            sums[0] += (kv * blk.vals_c[:, :, :k] * mji).sum((0, 2))
            sums[1] += kv.sum((0, 2))
            sums[2] += lv.sum((0, 2))
            sums[3] += (col * lv.sum(2).T).sum(1)
