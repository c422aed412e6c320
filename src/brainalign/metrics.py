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

from collections.abc import Callable, Mapping, Sequence
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
    """``H K H`` for the RBF kernel of bandwidth ``sigma`` on squared distances ``d2``."""
    k = (-d2 / (2.0 * sigma * sigma)).exp()
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


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
    g = torch.round(gram / scale)
    g.fill_diagonal_(float("-inf"))
    return torch.sort(g, dim=1, descending=True, stable=True).indices[:, :k]


def neighbour_mask(idx, n: int):
    """Dense 0/1 mask (n, n) with ``mask[i, j] = 1`` for j in ``idx[i]``."""
    import torch

    mask = torch.zeros(n, n, dtype=torch.float64, device=idx.device)
    return mask.scatter_(1, idx, 1.0)


def _unbiased_hsic_terms(term_cross, sum_k, sum_l, sum_kl, n: int):
    """Song et al. 2012 eq. 5 from its four sums (already computed on zero-diagonal kernels)."""
    return (term_cross + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 * sum_kl / (n - 2)) / (n * (n - 3))


@dataclass
class Summary:
    """What every pair needs of one representation (all tensors float64 on one device)."""

    gram: object  # (n, n) linear kernel of the z-scored features
    d2: object | None  # (n, n) squared distances (CKA only)
    idx: object | None  # (n, k_max) neighbour lists


def summarise(x, need_d2: bool, k_max: int):
    """Per-representation summary of features ``x`` (n, d), see :class:`Summary`."""
    z = zscore(x.double())
    gram = z @ z.T
    return Summary(
        gram=gram,
        d2=squared_distances(gram) if need_d2 else None,
        idx=neighbour_lists(gram, k_max) if k_max > 0 else None,
    )


# ----------------------------------------------------------------------------- all pairs


def _cka_scores(src: list[Summary], tgt: list[Summary], sigma: float, max_bytes: int):
    """CKA for every (source, target) pair: one matrix product of stacked centred kernels."""
    import torch

    n = src[0].gram.shape[0]
    per = n * n * 8
    chunk = max(1, max_bytes // (2 * per))

    def stack(sums):
        kc = [centred_kernel(s.d2, sigma).reshape(-1) for s in sums]
        kc = torch.stack(kc)
        return kc, (kc * kc).sum(1)

    out = torch.empty(len(src), len(tgt), dtype=torch.float64, device=src[0].gram.device)
    tgt_stacks = [stack(tgt[j : j + chunk]) for j in range(0, len(tgt), chunk)] if len(tgt) <= chunk else None
    for i in range(0, len(src), chunk):
        a, aa = stack(src[i : i + chunk])
        for jj, j in enumerate(range(0, len(tgt), chunk)):
            b, bb = tgt_stacks[jj] if tgt_stacks is not None else stack(tgt[j : j + chunk])
            hsic = a @ b.T
            out[i : i + chunk, j : j + chunk] = hsic / ((aa[:, None] * bb[None, :]).sqrt() + EPS_CKA)
    return out


def _mutual_knn_scores(src, tgt, k: int):
    """mean_i |NN_X(i) & NN_Y(i)| / k, by gathering X's mask at Y's neighbours: O(n k) a pair."""
    import torch

    n = src[0].gram.shape[0]
    rows = torch.arange(n, device=src[0].gram.device)[:, None]
    out = torch.empty(len(src), len(tgt), dtype=torch.float64, device=src[0].gram.device)
    for a, s in enumerate(src):
        mx = neighbour_mask(s.idx[:, :k], n)
        for b, t in enumerate(tgt):
            out[a, b] = mx[rows, t.idx[:, :k]].sum() / (n * k)
    return out


def _cycle_knn_scores(src, tgt, k: int):
    """Fraction of i with i in NN_X(j) for some j in NN_Y(i): gather of X's mask^T, O(n k) a pair."""
    import torch

    n = src[0].gram.shape[0]
    rows = torch.arange(n, device=src[0].gram.device)[:, None]
    out = torch.empty(len(src), len(tgt), dtype=torch.float64, device=src[0].gram.device)
    for a, s in enumerate(src):
        mxt = neighbour_mask(s.idx[:, :k], n).T
        for b, t in enumerate(tgt):
            out[a, b] = (mxt[rows, t.idx[:, :k]].amax(1) > 0).double().mean()
    return out


def _cknna_self(s: Summary, k: int):
    """Unbiased HSIC of X's masked kernel with itself (mask: X's top-k alone)."""
    n = s.gram.shape[0]
    m = neighbour_mask(s.idx[:, :k], n)
    kt = s.gram * m
    return _unbiased_hsic_terms((kt * kt.T).sum(), kt.sum(), kt.sum(), (kt.sum(0) * kt.sum(1)).sum(), n)


def _cknna_scores(src, tgt, k: int):
    """CKNNA for every pair. With M = MX * MY and K~ = K*M, L~ = L*M, each unbiased-HSIC
    sum is read off at Y's k neighbours of each i (the only places M can be 1): O(n k) a pair."""
    import torch

    n = src[0].gram.shape[0]
    dev = src[0].gram.device
    rows = torch.arange(n, device=dev)[:, None]
    self_t = torch.stack([_cknna_self(t, k) for t in tgt])
    t_idx, t_vals, t_cross = [], [], []
    for t in tgt:
        idx = t.idx[:, :k]
        my = neighbour_mask(idx, n)
        lv = t.gram[rows, idx]  # L[i, j] at j in NN_Y(i)
        t_idx.append(idx)
        t_vals.append(lv)
        t_cross.append(lv * my.T[rows, idx])  # L[j, i] MY[j, i] (L symmetric)
    out = torch.empty(len(src), len(tgt), dtype=torch.float64, device=dev)
    for a, s in enumerate(src):
        mx = neighbour_mask(s.idx[:, :k], n)
        kmx = s.gram * mx
        p = kmx * mx.T  # K[i,j] MX[i,j] MX[j,i]
        self_s = _cknna_self(s, k)
        for b in range(len(tgt)):
            idx = t_idx[b]
            kv = kmx[rows, idx]  # K~[i, j] at j in NN_Y(i)
            mxv = mx[rows, idx]
            lv = t_vals[b] * mxv  # L~[i, j]
            cross = (p[rows, idx] * t_cross[b]).sum()
            col_k = torch.zeros(n, dtype=torch.float64, device=dev).index_add_(0, idx.reshape(-1), kv.reshape(-1))
            row_l = lv.sum(1)
            hsic = _unbiased_hsic_terms(cross, kv.sum(), lv.sum(), (col_k * row_l).sum(), n)
            out[a, b] = hsic / ((self_s * self_t[b]).sqrt() + EPS_CKA)
    return out


def score_matrices(
    sources: Sequence, targets: Sequence, metrics: str | Sequence[str] = "all",
    device: str = "cpu", max_bytes: int = 2 << 30,
) -> dict[str, np.ndarray]:
    """Scores of every (source, target) pair for each metric.

    Parameters
    ----------
    sources : sequence of arrays of shape (n_stimuli, d_i)
    targets : sequence of arrays of shape (n_stimuli, v_j)
    metrics : metric names, ``'all'``, or family names
    device : ``'cpu'`` or a CUDA device
    max_bytes : memory budget for stacked kernels; peak memory is about
        ``(S + T) * n^2 * 8`` bytes for the Gram/distance summaries plus
        ``max_bytes`` for the kernel stacks (S sources, T targets, n stimuli).

    Returns ``{metric: array of shape (len(sources), len(targets))}``.
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
    src = [summarise(x, need_d2, k_max) for x in src_t]
    tgt = [summarise(y, need_d2, k_max) for y in tgt_t]
    fns: dict[str, Callable] = {
        "cka": lambda p: _cka_scores(src, tgt, p, max_bytes),
        "cknna": lambda p: _cknna_scores(src, tgt, p),
        "mutual_knn": lambda p: _mutual_knn_scores(src, tgt, p),
        "cycle_knn": lambda p: _cycle_knn_scores(src, tgt, p),
    }
    return {s.name: fns[s.family](s.param).cpu().numpy() for s in specs}


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
