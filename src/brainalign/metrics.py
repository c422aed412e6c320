"""The 27 alignment metric variants of the paper, computed for all pairs at once.

Conventions (SPEC.md, the reference code):

* every column (unit or voxel) is z-scored across stimuli first:
  ``(x - mean) / (std + 1e-8)`` with the unbiased std (torch's default);
* ``cka_{sigma}``: RBF kernels ``exp(-||xi - xj||^2 / (2 sigma^2))``, biased
  HSIC ``trace(K H L H)``, ``CKA = HSIC(K,L) / (sqrt(HSIC(K,K) HSIC(L,L)) + 1e-6)``;
* ``cknna*``: linear kernels ``X X^T``, entries kept where j is among i's top-k
  in both spaces (X's alone for HSIC(K,K)), unbiased HSIC, normalised like CKA;
* ``mutual_knn_{k}``: mean over stimuli of ``|NN_X(i) & NN_Y(i)| / k``;
* ``cycle_knn_{k}``: fraction of stimuli i that are among the X-neighbours of
  some Y-neighbour of i;
* neighbours by inner product of the z-scored features, self excluded, ties
  broken by the lowest index (so results do not depend on the device).

How pairs are computed (the engine). Each representation is summarised once:
z-scored features, squared distances, per sigma the centred kernel
``Kc = H K H`` and its self-HSIC ``sum(Kc * Kc)``, the top-k neighbour lists at
the largest k (smaller k are prefixes) and the masked kernels CKNNA needs.
Then ``HSIC(K, L) = sum(Kc * Lc)``, so all CKA pairs of a job are one matrix
product of stacked kernels, and every neighbour metric is a gather of
O(n k) entries per pair. No pair ever forms an n x n x n product.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CKA_SIGMAS: tuple[int, ...] = tuple(range(12, 101, 8))
CKNNA_K: dict[str, int] = {"cknna": 12, "cknna_10": 10, "cknna_50": 50}
MUTUAL_KNN_K: tuple[int, ...] = (20, 40, 60, 80, 200, 400)
CYCLE_KNN_K: tuple[int, ...] = (40, 60, 80, 100, 200, 400)
EPS_ZSCORE = 1e-8
EPS_CKA = 1e-6


@dataclass(frozen=True)
class MetricSpec:
    """A metric variant: its family and its parameter (sigma or k)."""

    name: str
    family: str
    param: int


def _registry() -> dict[str, MetricSpec]:
    reg = {f"cka_{s}": MetricSpec(f"cka_{s}", "cka", s) for s in CKA_SIGMAS}
    reg.update({n: MetricSpec(n, "cknna", k) for n, k in CKNNA_K.items()})
    reg.update({f"mutual_knn_{k}": MetricSpec(f"mutual_knn_{k}", "mutual_knn", k) for k in MUTUAL_KNN_K})
    reg.update({f"cycle_knn_{k}": MetricSpec(f"cycle_knn_{k}", "cycle_knn", k) for k in CYCLE_KNN_K})
    return reg


METRICS: dict[str, MetricSpec] = _registry()
ALL_METRICS: list[str] = list(METRICS)


def resolve_metrics(metrics: str | Sequence[str]) -> list[MetricSpec]:
    """Metric names to specs: variant names, ``'all'``, family names (``'cka'``,
    ``'mutual_knn'``, ``'cycle_knn'``) or glob patterns (``'cknna*'``: the ``cknna``
    name itself is the k = 12 variant)."""
    from fnmatch import fnmatchcase

    if isinstance(metrics, str):
        metrics = [metrics]
    out: list[MetricSpec] = []
    for name in metrics:
        if "*" in name or "?" in name:
            matched = [s for n, s in METRICS.items() if fnmatchcase(n, name)]
            if not matched:
                raise ValueError(f"metric pattern {name!r} matches no metric; known: {', '.join(ALL_METRICS)}")
            out.extend(matched)
        elif name == "all":
            out.extend(METRICS.values())
        elif name in METRICS:
            out.append(METRICS[name])
        elif any(spec.family == name for spec in METRICS.values()):
            out.extend(s for s in METRICS.values() if s.family == name)
        else:
            raise ValueError(
                f"unknown metric {name!r}; known: {', '.join(ALL_METRICS)} (or 'all', or a family name)"
            )
    seen: dict[str, MetricSpec] = {}
    for spec in out:
        seen.setdefault(spec.name, spec)
    return list(seen.values())


# ----------------------------------------------------------------------------- per representation


def zscore(x):
    """Column z-score across stimuli (rows), unbiased std, eps 1e-8. ``x``: (n, d) tensor."""
    return (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + EPS_ZSCORE)


def squared_distances(gram):
    """``||xi - xj||^2`` from the Gram matrix ``X X^T`` (n, n), clamped at 0."""
    sq = gram.diagonal()
    return (sq[:, None] + sq[None, :] - 2 * gram).clamp_min(0)


def centred_kernel(d2, sigma: float):
    """``H K H`` for the RBF kernel of bandwidth ``sigma`` on squared distances ``d2``.

    ``d2`` must be symmetric (then row and column means agree); computed in place
    in one new buffer.
    """
    import torch

    k = torch.mul(d2, -1.0 / (2.0 * sigma * sigma)).exp_()
    r = k.mean(1)
    return k.sub_(r[:, None]).sub_(r[None, :]).add_(r.mean())


TIE_TOLERANCE = 1e-9


def neighbour_lists(gram, k: int):
    """Top-``k`` neighbours of each stimulus by inner product, self excluded.

    Ties go to the lowest index (stable sort). Inner products are first rounded
    to ``TIE_TOLERANCE`` times the largest one, so values that are equal in exact
    arithmetic (integer-valued or duplicated data) tie even when floating-point
    rounding, which differs between devices and BLAS kernels, leaves them a few
    ulps apart. Returns (n, k) int64.
    """
    import torch

    n = gram.shape[0]
    if k >= n:
        raise ValueError(f"k = {k} needs more than k stimuli, got n = {n}")
    scale = gram.abs().max().clamp_min(torch.finfo(gram.dtype).tiny) * TIE_TOLERANCE
    q = torch.round(gram.double() / scale)  # |q| <= 1e9
    # one exact float64 key per entry: rounded value first, then the lower index
    # (|key| < 1e9 * 2^14 + n < 2^53 for n < 16,384; larger n sorts stably instead)
    cols = torch.arange(n, device=gram.device, dtype=torch.float64)
    if n < (1 << 14):
        key = q * (1 << 14) + (n - 1 - cols)[None, :]
        key.fill_diagonal_(float("-inf"))
        return torch.topk(key, k, dim=1).indices
    q.fill_diagonal_(float("-inf"))
    return torch.sort(q, dim=1, descending=True, stable=True).indices[:, :k]


def neighbour_mask(idx, n: int, dtype=None):
    """Dense 0/1 mask (n, n) with ``mask[i, j] = 1`` for j in ``idx[i]`` (float64 unless ``dtype``)."""
    import torch

    dtype = dtype or torch.float64
    mask = torch.zeros(n, n, dtype=dtype, device=idx.device)
    return mask.scatter_(1, idx, torch.ones_like(idx, dtype=dtype))


def _unbiased_hsic_terms(term_cross, sum_k, sum_l, sum_kl, n: int):
    """Song et al. 2012 eq. 5 from its four sums (already computed on zero-diagonal kernels)."""
    return (term_cross + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * sum_kl / (n - 2)) / (n * (n - 3))


@dataclass
class Summary:
    """What every pair needs of one representation.

    ``gram`` (n, n) is the linear kernel of the z-scored features, ``d2`` (n, n)
    the squared distances (CKA only), ``idx`` (n, k_max) the neighbour lists.
    Matrices are stored in the engine's storage dtype (float64, or float32 on GPU).
    """

    gram: object
    d2: object | None
    idx: object | None


def summarise(x, need_d2: bool, k_max: int, dtype=None):
    """Per-representation summary of features ``x`` (n, d), see :class:`Summary`.

    The Gram matrix is always formed in float64 (it decides neighbours and
    distances); ``dtype`` is the storage type of the n x n results.
    """
    import torch

    z = zscore(x.double())
    gram = z @ z.T
    gram = (gram + gram.T) / 2  # exactly symmetric, whatever the BLAS kernel did
    idx = neighbour_lists(gram, k_max) if k_max > 0 else None
    d2 = squared_distances(gram) if need_d2 else None
    dtype = dtype or torch.float64
    return Summary(gram=gram.to(dtype), d2=None if d2 is None else d2.to(dtype), idx=idx)


# ----------------------------------------------------------------------------- all pairs

ACCUMULATE_BLOCK = 1 << 20  # float32 partial sums over at most 2^20 terms, then float64


def _inner_products(a, b):
    """``a @ b.T`` in float64; float32 inputs are multiplied blockwise, sums kept in float64."""
    import torch

    if a.dtype == torch.float64:
        return a @ b.T
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[1], ACCUMULATE_BLOCK):
        out += (a[:, s : s + ACCUMULATE_BLOCK] @ b[:, s : s + ACCUMULATE_BLOCK].T).double()
    return out


def _stacked_products(src, tgt, vector, max_rows: int):
    """``<vector(a), vector(b)>`` for every source a and target b, in float64.

    ``vector(summary)`` gives one flattened n x n matrix; at most ``max_rows`` of
    them are held at once, stacked so that each block of pairs is one matrix
    product. Returns ``(products (S, T), self-products of sources (S,), of targets (T,))``.
    """
    import torch

    def stack(sums):
        v = torch.stack([vector(s).reshape(-1) for s in sums])
        return v, _self_hsic(v)

    rows_t = min(len(tgt), max(1, max_rows // 2))
    rows_s = max(1, max_rows - rows_t)
    dev = src[0].gram.device
    out = torch.empty(len(src), len(tgt), dtype=torch.float64, device=dev)
    self_s = torch.empty(len(src), dtype=torch.float64, device=dev)
    self_t = torch.empty(len(tgt), dtype=torch.float64, device=dev)
    for j in range(0, len(tgt), rows_t):
        b, self_t[j : j + rows_t] = stack(tgt[j : j + rows_t])
        for i in range(0, len(src), rows_s):
            a, self_s[i : i + rows_s] = stack(src[i : i + rows_s])
            out[i : i + rows_s, j : j + rows_t] = _inner_products(a, b)
            del a
        del b
    return out, self_s, self_t


def _cka_scores(src: list[Summary], tgt: list[Summary], sigma: float, max_rows: int):
    """CKA for every pair: ``HSIC(K, L) = sum(Kc * Lc)``, all pairs by stacked matrix products."""
    hsic, kk, ll = _stacked_products(src, tgt, lambda s: centred_kernel(s.d2, sigma), max_rows)
    return hsic / ((kk[:, None] * ll[None, :]).sqrt() + EPS_CKA)


def _self_hsic(kc):
    """``sum(Kc * Kc)`` per row of a float32 stack, accumulated in float64."""
    import torch

    out = torch.zeros(kc.shape[0], dtype=torch.float64, device=kc.device)
    for s in range(0, kc.shape[1], ACCUMULATE_BLOCK):
        out += (kc[:, s : s + ACCUMULATE_BLOCK].double() ** 2).sum(1)
    return out


def _gather(mat, idx):
    """``mat[i, idx[t, i, :]]`` for a stack of neighbour lists ``idx`` (T, n, k) -> (T, n, k)."""
    import torch

    n = mat.shape[0]
    rows = torch.arange(n, device=mat.device)[None, :, None]
    return mat[rows, idx]


def _mutual_knn_scores(src, tgt, k: int, max_rows: int):
    """mean_i |NN_X(i) & NN_Y(i)| / k = <MX, MY> / (n k): stacked products of 0/1 masks.

    Counts are integers below 2^24, so float32 products are exact.
    """
    import torch

    n = src[0].gram.shape[0]
    counts, _, _ = _stacked_products(
        src, tgt, lambda s: neighbour_mask(s.idx[:, :k], n, torch.float32), max_rows)
    return counts / (n * k)


def _cycle_knn_scores(src, tgt, k: int):
    """Fraction of i with i in NN_X(j) for some j in NN_Y(i): gather of X's mask^T, O(n k) a pair."""
    import torch

    n = src[0].gram.shape[0]
    idx = torch.stack([t.idx[:, :k] for t in tgt])
    out = torch.empty(len(src), len(tgt), dtype=torch.float64, device=idx.device)
    for a, s in enumerate(src):
        mxt = neighbour_mask(s.idx[:, :k], n, torch.bool).T
        out[a] = _gather(mxt, idx).any(2).double().mean(1)
    return out


def _cknna_self(s: Summary, k: int):
    """Unbiased HSIC of X's masked kernel with itself (mask: X's top-k alone), in O(n k).

    K~ = K * MX is nonzero only at (i, j in NN(i)); K~^T at (i, j) is nonzero where
    i is also in NN(j).
    """
    import torch

    n = s.gram.shape[0]
    idx = s.idx[:, :k]
    rows = torch.arange(n, device=idx.device)[:, None]
    kv = s.gram[rows, idx].double()  # K~[i, j]
    back = neighbour_mask(idx, n, torch.bool).T[rows, idx]  # MX[j, i]
    col = torch.zeros(n, dtype=torch.float64, device=idx.device).index_add_(0, idx.reshape(-1), kv.reshape(-1))
    total = kv.sum()
    return _unbiased_hsic_terms((kv * kv * back).sum(), total, total, (col * kv.sum(1)).sum(), n)


def _cknna_scores(src, tgt, k: int):
    """CKNNA for every pair. With M = MX * MY and K~ = K*M, L~ = L*M, each unbiased-HSIC
    sum is read off at Y's k neighbours of each i (the only places M can be 1): O(n k) a pair."""
    import torch

    n = src[0].gram.shape[0]
    dev = src[0].gram.device
    idx = torch.stack([t.idx[:, :k] for t in tgt])  # (T, n, k)
    self_t = torch.stack([_cknna_self(t, k) for t in tgt])
    t_vals = torch.stack([_gather(t.gram.double(), t.idx[None, :, :k])[0] for t in tgt])  # L[i, j], j in NN_Y(i)
    t_cross = t_vals * torch.stack([  # L[j, i] MY[j, i] (L symmetric)
        _gather(neighbour_mask(t.idx[:, :k], n, torch.bool).T, t.idx[None, :, :k])[0] for t in tgt
    ])
    flat_idx = idx.reshape(len(tgt), -1)
    out = torch.empty(len(src), len(tgt), dtype=torch.float64, device=dev)
    for a, s in enumerate(src):
        mx = neighbour_mask(s.idx[:, :k], n)
        kmx = s.gram.double() * mx
        kv = _gather(kmx, idx)  # K~[i, j] at j in NN_Y(i)
        lv = t_vals * _gather(mx, idx)  # L~[i, j]
        cross = (_gather(kmx * mx.T, idx) * t_cross).sum((1, 2))
        col_k = torch.zeros(len(tgt), n, dtype=torch.float64, device=dev).scatter_add_(
            1, flat_idx, kv.reshape(len(tgt), -1))
        sum_kl = (col_k * lv.sum(2)).sum(1)
        hsic = _unbiased_hsic_terms(cross, kv.sum((1, 2)), lv.sum((1, 2)), sum_kl, n)
        out[a] = hsic / ((_cknna_self(s, k) * self_t).sqrt() + EPS_CKA)
    return out


def default_max_bytes(device: str) -> int:
    """Memory budget for the n x n matrices of one job: 4 GiB on CPU, 70% of free GPU memory."""
    import torch

    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(0.7 * free)
    return 4 << 30


def score_matrices(
    sources: Sequence, targets: Sequence, metrics: str | Sequence[str] = "all",
    device: str = "cpu", max_bytes: int | None = None, dtype: str | None = None,
) -> dict[str, np.ndarray]:
    """Scores of every (source, target) pair for each metric.

    Parameters
    ----------
    sources : sequence of S arrays of shape (n_stimuli, d_i) (numpy or torch)
    targets : sequence of T arrays of shape (n_stimuli, v_j)
    metrics : metric names, ``'all'``, family names or glob patterns
    device : ``'cpu'`` or a CUDA device
    max_bytes : memory budget for n x n matrices (default :func:`default_max_bytes`)
    dtype : storage of the n x n matrices, ``'float32'`` (default; products and
        sums are still accumulated in float64) or ``'float64'``

    Memory: with b bytes per element (8 or 4), the source summaries take
    ``2 S n^2 b`` (Gram + distances), and targets are processed in chunks of
    ``c`` with ``(2 c + r) n^2 b <= max_bytes``, r kernels being stacked per
    product; peak ~ ``(2 S + 2 c + r) n^2 b`` plus O((S + c) n k) for neighbour
    lists. Example: n = 8,859, S = 36 layers, float32: 22.6 GB for the sources
    plus 0.31 GB per target or stacked kernel.

    Returns ``{metric: array of shape (S, T)}``.
    """
    import torch

    specs = resolve_metrics(metrics)
    src_t = [torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(device) for x in sources]
    tgt_t = [torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).to(device) for y in targets]
    if not src_t or not tgt_t:
        raise ValueError("align needs at least one source and one target representation")
    n = src_t[0].shape[0]
    for name, arr in [("source", a) for a in src_t] + [("target", b) for b in tgt_t]:
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(
                f"every {name} must be (n_stimuli, n_features) with n_stimuli = {n}; got {tuple(arr.shape)}"
            )
    need_d2 = any(s.family == "cka" for s in specs)
    k_max = max([s.param for s in specs if s.family != "cka"], default=0)
    if k_max >= n:
        raise ValueError(f"k = {k_max} needs more than k stimuli, got n = {n}; drop that metric or add stimuli")
    if dtype is None:
        dtype = "float32"
    store = getattr(torch, dtype)
    max_bytes = max_bytes or default_max_bytes(device)
    per_matrix = n * n * store.itemsize
    src = [summarise(x, need_d2, k_max, store) for x in src_t]
    budget_rows = max(3, max_bytes // per_matrix)  # n x n matrices we may hold beyond the sources
    chunk = max(1, min(len(tgt_t), (budget_rows - 1) // 3))
    kernel_rows = max(2, budget_rows - 2 * chunk)
    out = {s.name: np.empty((len(src_t), len(tgt_t))) for s in specs}
    for j in range(0, len(tgt_t), chunk):
        tgt = [summarise(y, need_d2, k_max, store) for y in tgt_t[j : j + chunk]]
        for spec in specs:
            if spec.family == "cka":
                mat = _cka_scores(src, tgt, spec.param, kernel_rows)
            elif spec.family == "cknna":
                mat = _cknna_scores(src, tgt, spec.param)
            elif spec.family == "mutual_knn":
                mat = _mutual_knn_scores(src, tgt, spec.param, kernel_rows)
            else:
                mat = _cycle_knn_scores(src, tgt, spec.param)
            out[spec.name][:, j : j + len(tgt)] = mat.cpu().numpy()
        del tgt
    return out


def align(source: Mapping, target: Mapping, metrics: str | Sequence[str] = "all", device: str = "cpu"):
    """Alignment of every (source key, target key) pair under each metric.

    Parameters
    ----------
    source : mapping name -> array (numpy or torch) of shape (n_stimuli, n_features)
    target : mapping name -> array of shape (n_stimuli, n_features), same stimuli
    metrics : metric names (see ``ALL_METRICS``), ``'all'`` or a family name
    device : ``'cpu'`` or ``'cuda'``

    Returns a pandas DataFrame with columns ``source, target, metric, score``,
    one row per (source key, target key, metric).
    """
    import pandas as pd

    src_names, tgt_names = list(source), list(target)
    mats = score_matrices([source[k] for k in src_names], [target[k] for k in tgt_names], metrics, device)
    frames = []
    for metric, mat in mats.items():
        frames.append(pd.DataFrame({
            "source": np.repeat(src_names, len(tgt_names)),
            "target": np.tile(tgt_names, len(src_names)),
            "metric": metric,
            "score": mat.reshape(-1),
        }))
    return pd.concat(frames, ignore_index=True)
