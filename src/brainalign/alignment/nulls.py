"""Permutation nulls per measurement: which (layer, parcel) alignments exceed chance.

For one (subject, model) the headline metric is computed again with the brain's stimulus order
shuffled (each permutation one shuffle of the stimuli, the same for every parcel and for every
model of the subject, so models are compared on the same nulls). Per (layer, parcel) the job keeps
the observed score and the nulls' mean, SD and exceedance count:

* ``p_perm = (1 + #{null >= observed}) / (1 + P)``: the exact permutation p-value, which cannot go
  below ``1 / (1 + P)`` (0.091 with the demo's 10 permutations);
* ``p_normal``: the one-sided normal tail of ``z = (observed - null mean) / null SD``, which resolves
  p-values below ``1 / (1 + P)`` and so can pass a false discovery rate over thousands of tests with
  few permutations (it assumes the null is roughly normal; with P >= 1,000 the exact one is as good).

:func:`null_tables` then controls the false discovery rate (Benjamini-Hochberg) over all the tests
of a modality and gives, per (subject, model, parcel), the fraction of significant layers.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("brainalign")

ALPHA = 0.05


def permutations(n: int, count: int, seed: int, subject: str) -> np.ndarray:
    """``count`` shuffles of ``n`` stimuli (rows), fixed by ``seed`` and the subject's name."""
    rng = np.random.default_rng([seed, zlib.crc32(subject.encode())])
    return np.stack([rng.permutation(n) for _ in range(count)]) if count else np.empty((0, n), dtype=np.int64)


def _permuted(array: np.ndarray, perm: np.ndarray):
    return lambda: array[perm]


# bytes of shuffled targets one engine pass may hold (the chunk of permutations it scores at once)
CHUNK_BYTES = 2 * 1024**3


def null_scores(sources: Sequence, targets: Sequence, metric: str, perms: np.ndarray, device: str = "cpu",
                what: str = "nulls", chunk_bytes: int = CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """The observed scores (S, T) of ``metric`` and those with the targets' rows shuffled by each of
    ``perms`` (P, S, T). Sources and targets as for :func:`brainalign.alignment.metrics.score_matrices`
    (arrays or loaders). The shuffled targets are extra targets of one engine pass, so each source
    layer is read and prepared once for all the permutations of a chunk (as many as fit in
    ``chunk_bytes`` of shuffled targets), not once per permutation."""
    from brainalign.alignment.metrics import score_matrices
    from brainalign.io import Progress

    arrays = [np.asarray(t() if callable(t) else t) for t in targets]
    per_perm = max(1, sum(a.nbytes for a in arrays))
    chunk = max(1, min(len(perms), int(chunk_bytes // per_perm))) if len(perms) else 1
    observed = None
    null = np.empty((len(perms), len(sources), len(arrays)))
    progress = Progress(len(perms), what, "permutations")
    for start in range(0, max(len(perms), 1), chunk):
        block = perms[start : start + chunk]
        extra = [_permuted(a, p) for p in block for a in arrays]
        got = score_matrices(sources, (arrays if observed is None else []) + extra, [metric], device)[metric]
        if observed is None:
            observed, got = got[:, : len(arrays)], got[:, len(arrays) :]
        null[start : start + len(block)] = got.reshape(len(sources), len(block), len(arrays)).transpose(1, 0, 2)
        progress.step(len(block))
    return observed, null


def summarise(observed: np.ndarray, null: np.ndarray) -> dict[str, np.ndarray]:
    """Per measurement: ``null_mean``, ``null_sd``, ``n_exceed``, ``p_perm``, ``p_normal`` (NaN
    where the observed score is NaN)."""
    from scipy.special import ndtr  # = scipy.stats.norm.sf(z) as ndtr(-z), without importing scipy.stats (~1 s)

    P = len(null)
    mean, sd = null.mean(axis=0), null.std(axis=0, ddof=1) if P > 1 else np.full(observed.shape, np.nan)
    exceed = (null >= observed[None]).sum(axis=0)
    p_perm = (1.0 + exceed) / (1.0 + P)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (observed - mean) / sd
    p_normal = ndtr(-z)
    bad = ~np.isfinite(observed)
    p_perm[bad] = np.nan
    p_normal[bad | ~np.isfinite(z)] = np.nan
    return {"null_mean": mean, "null_sd": sd, "n_exceed": exceed, "p_perm": p_perm, "p_normal": p_normal}


def bh_fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q); NaN stays NaN and is not counted as a test."""
    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if not m:
        return q
    order = np.argsort(p[ok], kind="stable")
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adj = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out = np.empty(m)
    out[order] = adj
    q[ok] = out
    return q


def null_tables(frame: pd.DataFrame, alpha: float = ALPHA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``frame``: the null jobs' rows of one modality (``src_model, tgt_model, metric, src_feature,
    tgt_feature, score, null_mean, null_sd, n_null, n_exceed, p_perm, p_normal``). Returns the rows
    with ``q_normal``, ``q_perm`` (BH over all the modality's tests) and ``significant``
    (``q_normal < alpha``), and per (tgt_model, src_model, tgt_feature) the number of layers tested
    and the fraction significant."""
    out = frame.copy()
    out["q_normal"] = bh_fdr(out["p_normal"].to_numpy())
    out["q_perm"] = bh_fdr(out["p_perm"].to_numpy())
    out["significant"] = out["q_normal"] < alpha
    tested = out[out["q_normal"].notna()]
    parcels = (tested.groupby(["tgt_model", "src_model", "tgt_feature"], observed=True, sort=True)
               .agg(n_layers=("significant", "size"), n_significant=("significant", "sum"),
                    max_score=("score", "max"), min_q_normal=("q_normal", "min"), min_p_perm=("p_perm", "min"))
               .reset_index())
    parcels["fraction_significant"] = parcels["n_significant"] / parcels["n_layers"]
    parcels["n_null"] = int(out["n_null"].iloc[0]) if len(out) else 0
    parcels["alpha"] = alpha
    return out, parcels
