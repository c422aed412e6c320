"""The voxelwise encoding-model metric ``ridge``: cross-validated ridge regression from a
layer's features to every voxel of an ROI, scored by the Pearson r of held-out predictions.

Method, per (source s, target t):

* outer K-fold cross-validation over the stimuli (:func:`kfold_indices`: a seeded
  permutation cut into K consecutive parts, the first ``n % K`` one stimulus longer);
* on each training fold, a ridge regression with an unpenalised intercept from the
  features to every voxel, with the penalty alpha chosen per voxel from a grid
  (:data:`DEFAULT_ALPHAS`) on that training fold only, by generalised cross-validation
  (``'gcv'``) or the exact efficient leave-one-out error (``'loo'``, the criterion of
  scikit-learn's ``RidgeCV(alpha_per_target=True)``); with the hat matrix
  ``H = 11'/n_tr + Xc (Xc'Xc + alpha I)^-1 Xc'`` (``Xc``: the training fold centred)::

      LOO(alpha)  = mean_i (r_i / (1 - H_ii))^2
      GCV(alpha)  = (||r||^2 / n_tr) / (1 - tr(H) / n_tr)^2

  (``r``: the training residuals at alpha; the first alpha of the grid wins ties);
* the model refitted on the whole training fold with each voxel's alpha predicts the
  held-out fold; a voxel's score is the Pearson r between its responses and its
  out-of-fold predictions over all n stimuli; the ROI's score is the mean (or median)
  over its voxels, and ``ridge_nc`` the same over ``r_v / sqrt(NC_v)``.

How it is computed. Nothing is done per ROI: per source, all voxels of all targets are
stacked (in chunks that fit the memory budget) and every (source, fold) decomposition
serves every voxel. With ``Xc'Xc = W diag(s^2) W'`` on the training fold (components with
``s^2 <= 1e-12 max s^2`` dropped), ``B = W' Xc' Yc`` and ``P = B / s``:

* ``||r_alpha||^2 = sum_k (alpha / (s_k^2 + alpha))^2 P_k^2 + (||yc||^2 - ||P||^2)`` and
  ``tr(H_alpha) = 1 + sum_k s_k^2 / (s_k^2 + alpha)``: GCV for every alpha and voxel is one
  (A x r) @ (r x V) product;
* LOO needs each training residual ``Yc - Q diag(s^2 / (s^2 + alpha)) P`` (``Q = Xc W / s``)
  and the leverages ``1/n_tr + sum_k Q_ik^2 s_k^2 / (s_k^2 + alpha)``: A products of
  (n_tr x r) @ (r x V) per (source, fold);
* the held-out predictions are ``ybar_tr + (Xc_te W) Z`` with ``Z = B / (s^2 + alpha_v)``,
  and only their sums ``sum yhat``, ``sum yhat^2``, ``sum yhat y`` over the stimuli are
  kept, per voxel, to give Pearson r over all n at the end.

Two routes, chosen per source:

* **primal** (d <= n_tr): fold sums ``X_f'X_f``, ``X_f'Y_f``, column sums and ``sum y^2`` of
  each fold give every training fold's centred cross products as totals minus fold
  (``Xc'Yc = X'Y - n_tr xbar ybar'``); ``eigh`` of the d x d ``Xc'Xc``. When ``2d < n_te``
  the held-out sums come from moments (``sum yhat y`` from ``W' Xc_te' Y_te``, ``sum yhat^2``
  from ``Z' (W' Xc_te' Xc_te W) Z``), else from the explicit n_te x V predictions;
* **dual** (d > n_tr, a layer wider than the training fold): ``eigh`` of the n_tr x n_tr
  kernel ``Xc Xc' = U diag(s^2) U'``, so ``Q = U``, ``P = U' Yc`` and
  ``Xc_te W = Xc_te Xc' U / s``; a wide layer costs no d^3.

Cost in flops (multiply-add = 2), per source, with V voxels in all, A alphas, K folds,
r <= min(d, n_tr) kept components:

* primal: ``2 n d^2`` (fold Grams) + ``2 n d V`` (fold cross products) + ``K (9 d^3)``
  (eigh, roughly) + per fold ``2 r d V`` (B; moments add ``2 r d V + 2 r^2 V``, explicit
  predictions ``2 n_te r V`` instead) + GCV ``2 A r V`` or LOO ``2 A n_tr r V``;
* dual: per fold ``2 n n_tr d`` (kernels) + ``9 n_tr^3`` (eigh) + ``2 n_tr r V`` (P) +
  ``2 n_te r V`` (predictions) + GCV ``2 A r V`` or LOO ``2 A n_tr r V``.

At n = 8,859, 12 layers of d = 768 and 180 ROIs of 200 voxels (V = 36,000), GCV costs
~1.1 TFLOP per layer (moments route; 13.5 TFLOP, about 220 s on two CPU cores, for the
whole job), LOO ~37 TFLOP per layer (19 alphas), which is GPU work.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from brainalign.io import proc_bytes

log = logging.getLogger(__name__)

#: the default penalty grid: 19 values from 1e-2 to 1e7, half a decade apart
DEFAULT_ALPHAS = np.logspace(-2, 7, 19)
SELECTIONS = ("gcv", "loo")
AGGREGATES = ("mean", "median")
PREDICTIONS = ("auto", "moments", "explicit")
#: eigen-components with s^2 <= RANK_TOL * max s^2 are dropped (rank deficiency, d > n)
RANK_TOL = 1e-12
#: a z-scored column whose largest |value| is below this is constant over the stimuli (a varying
#: column reaches at least sqrt((n - 1) / n); a constant one holds only rounding residue)
CONSTANT_TOL = 1e-3
#: on CPU, symmetric eigendecompositions up to this size run on one thread (see :func:`_components`)
EIGH_ONE_THREAD = 2048


# ----------------------------------------------------------------------------- folds and checks


def _check_folds(n: int, folds: int) -> None:
    if int(folds) != folds or folds < 2:
        raise ValueError(f"ridge: folds = {folds} cannot cross-validate; use folds >= 2")
    if n < 2 * folds:
        raise ValueError(f"ridge: n = {n} stimuli cannot make {folds} folds of >= 2; use fewer folds or more stimuli")


def kfold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out stimuli of each fold of the outer cross-validation.

    ``np.random.default_rng(seed).permutation(n)`` cut into ``folds`` consecutive parts
    with scikit-learn ``KFold``'s sizes (the first ``n % folds`` parts one stimulus longer).

    Parameters
    ----------
    n : number of stimuli
    folds : number of folds K, 2 <= K <= n / 2
    seed : seed of the permutation

    Returns
    -------
    list of K sorted int arrays, fold k of shape (n_k,), disjoint and covering range(n)
    """
    _check_folds(n, folds)
    perm = np.random.default_rng(seed).permutation(n)
    sizes = np.full(folds, n // folds)
    sizes[: n % folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _check_alphas(alphas) -> np.ndarray:
    grid = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64).ravel()
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError(f"ridge: alphas must be a non-empty grid of positive finite penalties, got {alphas!r}")
    return grid


def _live_targets(targets, n: int) -> list[bool]:
    """Per target: True if its voxels vary, False if all are constant; raises on a mix."""
    live = []
    for j, t in enumerate(targets):
        if t.ndim != 2 or t.shape[0] != n:
            raise ValueError(f"ridge: target {j} has shape {tuple(t.shape)}, expected ({n}, v); "
                             "give every target as stimuli x voxels over the same stimuli")
        if t.shape[1] == 0:
            live.append(False)
            continue
        const = t.abs().amax(0) < CONSTANT_TOL
        k = int(const.sum())
        if 0 < k < t.shape[1]:
            raise ValueError(f"ridge: target {j} has {k} constant voxel(s) of {t.shape[1]} (no variance across "
                             "stimuli, so no correlation): drop those voxels from the ROI")
        live.append(k == 0)
    return live


# ----------------------------------------------------------------------------- small pieces


class _Clock:
    """Seconds per phase; synchronises a GPU before each reading so the split is honest."""

    def __init__(self, device, on: bool):
        self.cuda = on and str(device).startswith("cuda")
        self.on = on
        self.t = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        if not self.on:
            return
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.t
        self.t = now


def _gather(targets, pieces, rows, width: int):
    """The chunk's voxels, rows ``rows`` (a device index), as one (len(rows), width) float64 matrix."""
    import torch

    m = len(rows)
    dev = targets[pieces[0][0]].device
    out = torch.empty((m, width), dtype=torch.float64, device=dev)
    flat = torch.empty(m * max(b - a for _, a, b, _ in pieces), dtype=torch.float64, device=dev)
    for j, a, b, o in pieces:  # one reused buffer, not a fresh one per target
        part = flat[: m * (b - a)].view(m, b - a)
        torch.index_select(targets[j][:, a:b], 0, rows, out=part)
        out[:, o:o + b - a].copy_(part)
    return out


def _pieces(live_spans, c0: int, c1: int) -> list[tuple[int, int, int, int]]:
    """(target, first column, end column, column in the chunk) of the live voxels c0..c1."""
    out = []
    for j, p0, p1 in live_spans:
        a, b = max(p0, c0), min(p1, c1)
        if a < b:
            out.append((j, a - p0, b - p0, a - c0))
    return out


def _components(gram):
    """Eigenvalues s^2 > RANK_TOL max s^2 and their eigenvectors of a symmetric PSD matrix.

    On CPU a matrix of up to :data:`EIGH_ONE_THREAD` rows is decomposed on one thread: the
    multi-threaded LAPACK path gains little at that size and, on cores shared with other
    jobs, slows down a hundredfold (0.06 s becomes 10 s for d = 768).
    """
    import torch

    if gram.device.type == "cpu" and gram.shape[0] <= EIGH_ONE_THREAD:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            ev, vec = torch.linalg.eigh(gram)
        finally:
            torch.set_num_threads(threads)
    else:
        ev, vec = torch.linalg.eigh(gram)
    top = float(ev[-1]) if ev.numel() else 0.0
    keep = ev > RANK_TOL * top if top > 0 else torch.zeros_like(ev, dtype=torch.bool)
    return ev[keep], vec[:, keep]


def _select_gcv(P, s2, yyc, n_tr: int, alphas_t):
    """Per voxel, the index of the alpha with the smallest GCV (first on ties).

    P : (r, V) ``U' yc`` per component; s2 : (r,); yyc : (V,) ``||yc||^2``; alphas_t : (A,)
    """
    P2 = P * P
    perp = (yyc - P2.sum(0)).clamp_min_(0.0)  # the part of yc outside the features' span
    a = alphas_t[:, None]
    rss = ((a / (s2[None, :] + a)) ** 2) @ P2 + perp  # (A, V)
    df = 1.0 + (s2[None, :] / (s2[None, :] + a)).sum(1)
    gcv = rss / (n_tr * (1.0 - df / n_tr) ** 2)[:, None]
    return gcv.argmin(0)


def _select_loo(Q, s2, P, Yc, alphas_t):
    """Per voxel, the index of the alpha with the smallest mean squared leave-one-out error.

    Q : (n_tr, r) orthonormal; s2 : (r,); P : (r, V) = Q' Yc; Yc : (n_tr, V) centred responses
    """
    import torch

    n_tr, V = Yc.shape
    Q2 = Q * Q
    best = torch.full((V,), math.inf, dtype=Yc.dtype, device=Yc.device)
    idx = torch.zeros(V, dtype=torch.long, device=Yc.device)
    for i, a in enumerate(alphas_t.tolist()):
        f = s2 / (s2 + a)
        h = 1.0 / n_tr + Q2 @ f
        R = torch.addmm(Yc, Q, P * f[:, None], alpha=-1.0)  # training residuals at alpha
        R.div_((1.0 - h)[:, None])
        err = R.square_().mean(0)
        better = err < best
        best = torch.where(better, err, best)
        idx[better] = i
    return idx


def _pearson(sh, shh, shy, sy, syy, n: int):
    """Pearson r per voxel from sums over the n stimuli of yhat, yhat^2, yhat y, y, y^2."""
    cov = shy - sh * sy / n
    vh = (shh - sh * sh / n).clamp_min(0.0)
    vy = (syy - sy * sy / n).clamp_min(0.0)
    return cov / (vh * vy).sqrt()


# ----------------------------------------------------------------------------- the two routes


def _budget_primal(n, d, K, A, n_te, loo, moments, V):
    """(fixed bytes, bytes per voxel) of the primal route."""
    fixed = n * d + (3 * K + 3) * d * d + 6 * V + (2 * n * d if loo else 0) + (0 if moments else n_te * d)
    per = n + (K + 9) * d + 2 * A + 2 * K + 16 + (2 * n + d if loo else 0) + (0 if moments else 2 * n_te)
    return 8 * fixed, 8 * per


def _budget_dual(n, d, n_tr, n_te, A, loo, V):
    """(fixed bytes, bytes per voxel) of the dual route."""
    fixed = n * d + n_tr * d + 3 * n_tr * n_tr + 2 * n_te * n_tr + 6 * V
    per = n + 2 * n_te + 3 * n_tr + 2 * A + 16 + (2 * n_tr if loo else 0)
    return 8 * fixed, 8 * per


def _chunk(fixed: int, per: int, V: int, max_bytes: int, what: str) -> int:
    c = int(max(1, min(V, (max_bytes - fixed) // per)))
    if c < min(V, 256):
        log.warning("%s: a memory budget of %.2f GB leaves chunks of %d voxel(s) (fixed %.2f GB, %.1f kB per "
                    "voxel): slow; raise max_bytes", what, max_bytes / 1e9, c, fixed / 1e9, per / 1e3)
    return c


def _chunk_rows(targets, live_spans, perm, c0: int, c1: int, V: int, cache: dict):
    """Voxels c0..c1 of all live targets, rows in fold order: (n, c1 - c0). When one chunk holds every
    voxel it is kept in ``cache`` for the next source instead of being gathered again."""
    if cache.get("range") == (c0, c1):
        return cache["Y"]
    cache.clear()
    Y = _gather(targets, _pieces(live_spans, c0, c1), perm, c1 - c0)
    if c1 - c0 == V:
        cache.update(range=(c0, c1), Y=Y)
    return Y


def _primal(X, targets, live_spans, V, bounds, perm, alphas_t, selection, prediction, max_bytes, clock, what,
            alpha_idx, cache):
    """Per-voxel r of one source whose width d is at most every training fold's size."""
    import torch

    n, d = X.shape
    K = len(bounds) - 1
    A = len(alphas_t)
    n_te_max = max(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    loo = selection == "loo"
    # moments cost 2 r d V + 2 r^2 V per fold, explicit predictions 2 n_te r V (r <= d)
    moments = prediction == "moments" or (prediction == "auto" and 2 * d < n_te_max)
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    # fold sums and each training fold's decomposition (reused by every voxel chunk)
    xs = [X[a:b].sum(0) for a, b in spans]
    xx = [X[a:b].T @ X[a:b] for a, b in spans]
    XS, XX = sum(xs), sum(xx)
    clock.lap("sums")
    fold = []
    for k, (a, b) in enumerate(spans):
        n_te = b - a
        n_tr = n - n_te
        xbar = (XS - xs[k]) / n_tr
        sxx = (XX - xx[k]) - n_tr * torch.outer(xbar, xbar)
        s2, W = _components(sxx)
        del sxx
        f = {"n_tr": n_tr, "n_te": n_te, "xbar": xbar, "s2": s2, "s": s2.sqrt(), "W": W, "wx": W.T @ xbar}
        if moments:
            dx = xs[k] - n_te * xbar
            ste = xx[k] - torch.outer(xs[k], xbar) - torch.outer(xbar, xs[k]) + n_te * torch.outer(xbar, xbar)
            f["G"] = W.T @ ste @ W  # (Xc_te W)'(Xc_te W)
            f["e"] = W.T @ dx  # column sums of Xc_te W
            del ste
        fold.append(f)
    del xx
    clock.lap("eigh")
    fixed, per = _budget_primal(n, d, K, A, n_te_max, loo, moments, V)
    size = _chunk(fixed, per, V, max_bytes, what)
    r = torch.empty(V, dtype=torch.float64, device=X.device)
    chunks = 0
    for c0 in range(0, V, size):
        c1 = min(V, c0 + size)
        chunks += 1
        Y = _chunk_rows(targets, live_spans, perm, c0, c1, V, cache)
        clock.lap("gather")
        C = [X[a:b].T @ Y[a:b] for a, b in spans]
        T = sum(C)
        ys = [Y[a:b].sum(0) for a, b in spans]
        yy = [Y[a:b].square().sum(0) for a, b in spans]
        YS, YY = sum(ys), sum(yy)
        sh = torch.zeros(c1 - c0, dtype=torch.float64, device=X.device)
        shh, shy = sh.clone(), sh.clone()
        clock.lap("sums")
        for k, (a, b) in enumerate(spans):
            f = fold[k]
            n_tr, n_te, W, s, s2 = f["n_tr"], f["n_te"], f["W"], f["s"], f["s2"]
            ybar = (YS - ys[k]) / n_tr
            yyc = (YY - yy[k]) - n_tr * ybar * ybar
            if moments:
                B = W.T @ T
                M = W.T @ C[k]
                B.sub_(M).addr_(f["wx"], ybar, alpha=-n_tr)  # W' Xc_tr' Yc_tr
                M.addr_(f["wx"], ys[k], alpha=-1.0)  # W' Xc_te' Y_te
            else:
                B = (W.T @ (T - C[k])).addr_(f["wx"], ybar, alpha=-n_tr)
            P = B / s[:, None]
            clock.lap("project")
            if loo:
                Q = (torch.cat([X[:a], X[b:]]) - f["xbar"]) @ W / s
                Yc = torch.cat([Y[:a], Y[b:]]) - ybar
                idx = _select_loo(Q, s2, P, Yc, alphas_t)
                del Q, Yc
            else:
                idx = _select_gcv(P, s2, yyc, n_tr, alphas_t)
            del P
            alpha_idx[k, c0:c1] = idx.to("cpu", torch.int16).numpy()
            clock.lap("select")
            Z = B.div_(s2[:, None] + alphas_t[idx][None, :])  # coefficients on Xc_te W
            if moments:
                sd = f["e"] @ Z
                sdd = (Z * (f["G"] @ Z)).sum(0)
                sdy = (Z * M).sum(0)
                del M
            else:
                D = ((X[a:b] - f["xbar"]) @ W) @ Z
                sd = D.sum(0)
                sdd = D.square().sum(0)
                sdy = (D * Y[a:b]).sum(0)
                del D
            del Z, B
            sh += sd + n_te * ybar
            shh += sdd + 2 * ybar * sd + n_te * ybar * ybar
            shy += sdy + ybar * ys[k]
            clock.lap("predict")
        r[c0:c1] = _pearson(sh, shh, shy, YS, YY, n)
        del Y, C, T
    return r, {"route": "primal", "prediction": "moments" if moments else "explicit", "chunk_voxels": size,
               "chunks": chunks, "fixed_bytes": fixed, "bytes_per_voxel": per}


def _dual(X, targets, live_spans, V, bounds, perm, alphas_t, selection, max_bytes, clock, what, alpha_idx, cache):
    """Per-voxel r of one source wider than a training fold: everything in the kernel's eigenbasis."""
    import torch

    n, d = X.shape
    A = len(alphas_t)
    loo = selection == "loo"
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    n_te_max = max(b - a for a, b in spans)
    fixed, per = _budget_dual(n, d, n - min(b - a for a, b in spans), n_te_max, A, loo, V)
    size = _chunk(fixed, per, V, max_bytes, what)
    dev = X.device
    sh = torch.zeros(V, dtype=torch.float64, device=dev)
    shh, shy, sy, syy = sh.clone(), sh.clone(), sh.clone(), sh.clone()
    chunks = 0
    for k, (a, b) in enumerate(spans):
        n_te = b - a
        n_tr = n - n_te
        Xtr = torch.cat([X[:a], X[b:]])
        xbar = Xtr.mean(0)
        Xtr.sub_(xbar)
        s2, U = _components(Xtr @ Xtr.T)
        s = s2.sqrt()
        E = ((X[a:b] - xbar) @ Xtr.T) @ U / s  # Xc_te W, with W = Xc_tr' U / s
        del Xtr
        clock.lap("eigh")
        for c0 in range(0, V, size):
            c1 = min(V, c0 + size)
            chunks += 1
            Y = _chunk_rows(targets, live_spans, perm, c0, c1, V, cache)
            Yc = torch.cat([Y[:a], Y[b:]])
            Yte = Y[a:b]
            del Y
            clock.lap("gather")
            ybar = Yc.mean(0)
            Yc.sub_(ybar)
            yyc = Yc.square().sum(0)
            P = U.T @ Yc
            clock.lap("project")
            if loo:
                idx = _select_loo(U, s2, P, Yc, alphas_t)
            else:
                idx = _select_gcv(P, s2, yyc, n_tr, alphas_t)
            del Yc
            alpha_idx[k, c0:c1] = idx.to("cpu", torch.int16).numpy()
            clock.lap("select")
            Z = P.mul_(s[:, None] / (s2[:, None] + alphas_t[idx][None, :]))
            D = E @ Z
            sd = D.sum(0)
            sh[c0:c1] += sd + n_te * ybar
            shh[c0:c1] += D.square().sum(0) + 2 * ybar * sd + n_te * ybar * ybar
            shy[c0:c1] += (D * Yte).sum(0) + ybar * Yte.sum(0)
            sy[c0:c1] += Yte.sum(0)
            syy[c0:c1] += Yte.square().sum(0)
            del D, Z, P, Yte
            clock.lap("predict")
        del E, U
    return _pearson(sh, shh, shy, sy, syy, n), {"route": "dual", "prediction": "explicit", "chunk_voxels": size,
                                                  "chunks": chunks, "fixed_bytes": fixed, "bytes_per_voxel": per}


# ----------------------------------------------------------------------------- public


def ridge_voxel_scores(sources: Sequence, targets: Sequence, *, folds: int = 5, seed: int = 0, alphas=None,
                       selection: str = "gcv", max_bytes: int | None = None, return_alphas: bool = False,
                       stats: dict | None = None, what: str = "ridge", prediction: str = "auto"):
    """Cross-validated ridge encoding score of every voxel of every target, for each source.

    Parameters
    ----------
    sources : sequence of S torch float64 tensors of shape (n, d_s), columns z-scored across stimuli
    targets : sequence of T torch float64 tensors of shape (n, v_t), columns (voxels) z-scored;
        same device as the sources
    folds : number K of outer cross-validation folds (:func:`kfold_indices`)
    seed : seed of the fold assignment
    alphas : penalty grid of shape (A,) (default :data:`DEFAULT_ALPHAS`)
    selection : ``'gcv'`` (generalised cross-validation) or ``'loo'`` (exact leave-one-out, as
        scikit-learn's ``RidgeCV(alpha_per_target=True)``), per voxel on each training fold
    max_bytes : memory budget beyond the inputs (default
        :func:`brainalign.alignment.metrics.default_max_bytes`); voxels are processed in chunks that fit it
    return_alphas : also return the alpha chosen per (source, fold, voxel)
    stats : a dict to fill with ``seconds`` per phase and, per source, the route, prediction
        mode, chunk size and memory model
    what : prefix of the progress lines (one per source, logged at INFO)
    prediction : ``'auto'``, ``'moments'`` or ``'explicit'``: how the primal route gets the
        held-out sums (same result; ``'auto'`` takes the cheaper)

    Returns
    -------
    r : array of shape (S, V) with V = sum of v_t, the targets' voxels in order: each voxel's
        Pearson r between its responses and its out-of-fold predictions; NaN for a constant
        source or an all-constant target
    alphas_chosen : array of shape (S, K, V), only with ``return_alphas``: the alpha each
        voxel got on each training fold (NaN where r is NaN)

    Peak memory beyond the inputs, in bytes, with 8-byte floats, A alphas, n_te the largest
    held-out fold, n_tr = n - n_te, V_c voxels per chunk and V live voxels in all:

    * primal (d <= n_tr): ``8 (n d + (3K + 3) d^2 + 6 V [+ 2 n d for LOO] [+ n_te d explicit])``
      plus per voxel of a chunk ``8 (n + (K + 9) d + 2A + 2K + 16 [+ 2n + d for LOO]
      [+ 2 n_te explicit])``;
    * dual (d > n_tr): ``8 (n d + n_tr d + 3 n_tr^2 + 2 n_te n_tr + 6 V)`` plus per voxel
      ``8 (n + 2 n_te + 3 n_tr + 2A + 16 [+ 2 n_tr for LOO])``;

    and V_c = (max_bytes - fixed) / per voxel. Example: n = 8,859, d = 768, K = 5, V = 36,000,
    GCV: 0.14 GB fixed and 157 kB per voxel, so the default 1.5 GiB budget makes 4 chunks of
    ~9,300 voxels.
    """
    import torch

    grid = _check_alphas(alphas)
    if selection not in SELECTIONS:
        raise ValueError(f"ridge: unknown selection {selection!r}; use one of {', '.join(SELECTIONS)}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"ridge: unknown prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    sources, targets = list(sources), list(targets)
    if not sources or not targets:
        raise ValueError("ridge: needs at least one source and one target")
    n = int(sources[0].shape[0])
    test = kfold_indices(n, folds, seed)
    for i, x in enumerate(sources):
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"ridge: source {i} has shape {tuple(x.shape)}, expected ({n}, d); "
                             "give every source as stimuli x features over the same stimuli")
    device = sources[0].device
    targets = [torch.as_tensor(t, dtype=torch.float64, device=device) for t in targets]
    live = _live_targets(targets, n)
    widths = [int(t.shape[1]) for t in targets]
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    live_cols = np.concatenate([np.arange(offsets[j], offsets[j + 1]) for j in range(len(targets)) if live[j]]
                               + [np.zeros(0, dtype=int)])
    spans, p = [], 0
    for j, w in enumerate(widths):
        if live[j]:
            spans.append((j, p, p + w))
            p += w
    V = p
    if max_bytes is None:
        from brainalign.alignment.metrics import default_max_bytes

        max_bytes = default_max_bytes(str(device))
    S, K = len(sources), int(folds)
    sizes = [len(f) for f in test]
    bounds = [int(b) for b in np.concatenate([[0], np.cumsum(sizes)])]
    perm = torch.as_tensor(np.concatenate(test), device=device)
    alphas_t = torch.as_tensor(grid, dtype=torch.float64, device=device)
    r_out = np.full((S, offsets[-1]), np.nan)
    a_out = np.full((S, K, offsets[-1]), np.nan) if return_alphas else None
    clock = _Clock(device, stats is not None)
    cache: dict = {}  # the gathered voxels, while one chunk holds them all
    info = []
    for i, src in enumerate(sources):
        t0 = time.perf_counter()
        X = torch.as_tensor(src, dtype=torch.float64, device=device)[perm]  # folds are now row blocks
        keep = X.abs().amax(0) >= CONSTANT_TOL
        if V == 0 or not bool(keep.any()):
            info.append({"route": "none"})
            log.info("%s: source %d/%d is constant (or no target varies): NaN", what, i + 1, S)
            continue
        if not bool(keep.all()):
            X = X[:, keep]  # constant features carry nothing
        d = X.shape[1]
        alpha_idx = np.zeros((K, V), dtype=np.int16)
        clock.lap("gather")
        if d <= n - max(sizes):
            r, st = _primal(X, targets, spans, V, bounds, perm, alphas_t, selection, prediction, max_bytes, clock, what,
                            alpha_idx, cache)
        else:
            r, st = _dual(X, targets, spans, V, bounds, perm, alphas_t, selection, max_bytes, clock, what, alpha_idx,
                          cache)
        del X
        r_out[i, live_cols] = r.cpu().numpy()
        if a_out is not None:
            a_out[i][:, live_cols] = grid[alpha_idx]
        info.append(st)
        log.info("%s: source %d/%d, %.1f s", what, i + 1, S, time.perf_counter() - t0)
    cache.clear()
    if stats is not None:
        stats.update({"seconds": dict(clock.seconds), "sources": info, "voxels": V, "max_bytes": max_bytes})
    return (r_out, a_out) if return_alphas else r_out


def _aggregate(r, widths: Sequence[int], aggregate: str, voxel_ceilings=None) -> dict[str, np.ndarray]:
    """ROI scores (S, T) from per-voxel r (S, V): ``ridge`` and, with ceilings, ``ridge_nc``."""
    agg = np.mean if aggregate == "mean" else np.median
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    S, T = r.shape[0], len(widths)
    out = {"ridge": np.full((S, T), np.nan)}
    if voxel_ceilings is not None:
        out["ridge_nc"] = np.full((S, T), np.nan)
    for j in range(T):
        rj = r[:, offsets[j]:offsets[j + 1]]
        if rj.shape[1] == 0:
            continue
        out["ridge"][:, j] = agg(rj, axis=1)
        if voxel_ceilings is not None:
            nc = np.asarray(voxel_ceilings[j], dtype=np.float64)
            ok = np.isfinite(nc) & (nc > 0)
            if ok.any():
                out["ridge_nc"][:, j] = agg(rj[:, ok] / np.sqrt(nc[ok]), axis=1)
    return out


def _check_ceilings(voxel_ceilings, widths: Sequence[int]) -> None:
    if voxel_ceilings is None:
        return
    if len(voxel_ceilings) != len(widths):
        raise ValueError(f"ridge: {len(voxel_ceilings)} voxel_ceilings for {len(widths)} targets; give one array "
                         "per target")
    for j, (nc, w) in enumerate(zip(voxel_ceilings, widths, strict=True)):
        if np.shape(nc) != (w,):
            raise ValueError(f"ridge: voxel_ceilings[{j}] has shape {np.shape(nc)}, target {j} has {w} voxels; "
                             "give one noise ceiling per voxel")


def ridge_scores(sources, targets, *, folds: int = 5, seed: int = 0, alphas=None, selection: str = "gcv",
                 aggregate: str = "mean", voxel_ceilings=None, max_bytes: int | None = None,
                 what: str = "ridge") -> dict[str, np.ndarray]:
    """Voxelwise ridge encoding-model alignment of every (source, target) pair.

    Per pair: K-fold cross-validation over stimuli; on each training fold, a ridge
    regression with an unpenalised intercept to every voxel, its alpha chosen per voxel
    on the training fold (``selection``); each voxel scored by the Pearson r of its
    out-of-fold predictions; the ROI by the mean (or median) of its voxels' r. See the
    module docstring for the method and its cost, and :func:`ridge_voxel_scores` for
    the per-voxel scores and the memory model (in short: the inputs, plus a fixed
    ``8 (n d + (3K + 3) d^2)`` bytes per source, plus ``8 (n + (K + 9) d)`` bytes per voxel
    of a chunk for GCV, chunks sized to ``max_bytes``).

    Parameters
    ----------
    sources : list of S torch float64 tensors of shape (n, d_s), columns z-scored
    targets : list of T torch float64 tensors of shape (n, v_t) (one ROI each), columns z-scored
    folds : number of outer folds K (n >= 2K)
    seed : seed of the fold assignment (:func:`kfold_indices`)
    alphas : penalty grid of shape (A,) (default :data:`DEFAULT_ALPHAS`)
    selection : ``'gcv'`` or ``'loo'``
    aggregate : ``'mean'`` or ``'median'`` over an ROI's voxels
    voxel_ceilings : list of T arrays of shape (v_t,): each voxel's noise ceiling as a
        fraction in (0, 1], NaN = unknown; adds ``ridge_nc``
    max_bytes : memory budget beyond the inputs (default
        :func:`brainalign.alignment.metrics.default_max_bytes`)
    what : prefix of the progress lines

    Returns
    -------
    dict with ``'ridge'``: array of shape (S, T), and with ``voxel_ceilings`` ``'ridge_nc'``:
    array of shape (S, T), the aggregate of ``r_v / sqrt(NC_v)`` over the voxels with a
    finite positive ceiling (NaN if none). Constant sources and all-constant targets score NaN.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"ridge: unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATES)}")
    widths = [int(t.shape[1]) for t in targets]
    _check_ceilings(voxel_ceilings, widths)
    r = ridge_voxel_scores(sources, targets, folds=folds, seed=seed, alphas=alphas, selection=selection,
                           max_bytes=max_bytes, what=what)
    return _aggregate(r, widths, aggregate, voxel_ceilings)


# ----------------------------------------------------------------------------- measurement


def bench_ridge(n: int = 8859, layers: int = 12, d: int = 768, rois: int = 180, v: int = 200,
                selection: str = "gcv", seed: int = 0, device: str = "cpu", max_bytes: int | None = None) -> dict:
    """Time :func:`ridge_scores` on synthetic z-scored data of the given shape.

    The layers are noisy mixtures of one latent (n, d) matrix; every voxel is a random
    linear read-out of the latent plus noise, at a signal-to-noise ratio that varies over voxels.

    Returns
    -------
    dict with ``seconds`` (the ridge run), ``seconds_data`` (building the data),
    ``rss_before_bytes`` (RSS with the data built), ``peak_rss_bytes`` (VmHWM after the run;
    reset before it where the kernel allows),
    ``data_bytes`` (the inputs), ``phases`` (seconds per phase), ``sources`` (route and
    chunking per layer) and ``mean_ridge`` (the mean ROI score, a sanity check)
    """
    import torch

    t0 = time.perf_counter()
    g = torch.Generator(device="cpu").manual_seed(seed)

    def z(x):
        return (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + 1e-8)

    latent = torch.randn(n, d, generator=g, dtype=torch.float64)
    sources = [z(latent + (0.5 + i / max(1, layers)) * torch.randn(n, d, generator=g, dtype=torch.float64)).to(device)
               for i in range(layers)]
    targets = []
    for _ in range(rois):
        w = torch.randn(d, v, generator=g, dtype=torch.float64) / math.sqrt(d)
        snr = torch.logspace(-2, 1, v, dtype=torch.float64)
        y = (latent @ w) * snr.sqrt() + torch.randn(n, v, generator=g, dtype=torch.float64)
        targets.append(z(y).to(device))
    del latent, y, w
    data_s = time.perf_counter() - t0
    try:  # hand the generator's freed temporaries back to the system (glibc keeps them otherwise)
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:  # reset the peak RSS so it measures the run (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    rss0 = proc_bytes("VmRSS")
    widths = [v] * rois
    stats: dict = {}
    t0 = time.perf_counter()
    r = ridge_voxel_scores(sources, targets, selection=selection, stats=stats, max_bytes=max_bytes)
    res = _aggregate(r, widths, "mean")
    secs = time.perf_counter() - t0
    return {"n": n, "layers": layers, "d": d, "rois": rois, "v": v, "selection": selection, "seconds": secs,
            "seconds_data": data_s, "rss_before_bytes": rss0, "peak_rss_bytes": proc_bytes("VmHWM"),
            "data_bytes": 8 * n * (layers * d + rois * v), "phases": stats["seconds"],
            "sources": stats["sources"][:1], "mean_ridge": float(np.nanmean(res["ridge"]))}
