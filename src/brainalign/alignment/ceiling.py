"""Metric-specific split-half noise ceilings.

Each image's trials are split in two disjoint halves by their order (odd-numbered trials: half A,
even-numbered: half B; images with one trial are left out). The alignment metric between the two
halves' mean responses of a parcel, ``s``, measures how reproducible that parcel's representation
is. Under the classical test model (trial = signal + independent noise) a metric that behaves like a
correlation gives ``s = sqrt(R(m_a) R(m_b))``, with ``R(m) = m r / (1 + (m - 1) r)`` the
Spearman-Brown reliability of a mean of ``m`` trials and ``r`` the single-trial reliability;
``m_a``, ``m_b`` are the halves' effective trial counts (``1 / mean(1 / k)``, as in NSD's noise
ceiling). Solving for ``r`` and stepping up to the trials the alignment actually averages gives the
reliability of the measured responses, ``R(m)``; the metric of a noise-free model against them is
``sqrt(R(m))``: the **ceiling**, the score a perfect model would reach. With two single-trial halves
and two trials this is the textbook ``2 s / (1 + s)`` step, then the square root.

The square root matters: normalising by ``R(m)`` itself (as some benchmarks do) overstates
ceiling-normalised scores wherever the data are noisy. ``tests/test_ceiling.py`` checks the ceiling
against the metric of the planted noise-free signal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def spearman_brown(r: float, m: float) -> float:
    """Reliability of the mean of ``m`` trials from the single-trial reliability ``r``."""
    return m * r / (1.0 + (m - 1.0) * r)


def effective_trials(counts: np.ndarray) -> float:
    """``1 / mean(1 / k)``: the trial count whose noise variance equals that of averages over
    ``counts`` trials."""
    counts = np.asarray(counts, dtype=float)
    if counts.size == 0 or (counts < 1).any():
        raise ValueError("every image needs at least one trial")
    return float(1.0 / np.mean(1.0 / counts))


def single_trial_reliability(s: float, m_a: float, m_b: float) -> float:
    """The ``r`` with ``sqrt(R(m_a) R(m_b)) = s`` (bisection; the left side rises from 0 to 1
    with ``r``). ``s <= 0`` gives 0, ``s >= 1`` gives 1, NaN stays NaN."""
    if not np.isfinite(s):
        return float("nan")
    if s <= 0:
        return 0.0
    if s >= 1:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.sqrt(spearman_brown(mid, m_a) * spearman_brown(mid, m_b)) < s:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ceiling_from_split_half(s: float, m_a: float, m_b: float, m: float) -> tuple[float, float]:
    """``(reliability, ceiling)`` of responses averaged over ``m`` effective trials, from the
    split-half score ``s`` of halves with ``m_a`` and ``m_b`` effective trials."""
    reliability = spearman_brown(single_trial_reliability(s, m_a, m_b), m)
    return reliability, float(np.sqrt(reliability))


def halves(mean: np.ndarray, half_a: np.ndarray, repeats: np.ndarray,
           repeats_a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two halves' mean responses of the images with 2+ trials: ``(keep, a, b)``, ``keep`` the
    boolean mask of those images; half B from the mean of all trials and half A."""
    repeats = np.asarray(repeats)
    repeats_a = np.asarray(repeats_a)
    keep = repeats >= 2
    k, ka = repeats[keep, None].astype(np.float64), repeats_a[keep, None].astype(np.float64)
    a = np.asarray(half_a[keep], dtype=np.float64)
    b = (k * np.asarray(mean[keep], dtype=np.float64) - ka * a) / (k - ka)
    return keep, a.astype(np.float32), b.astype(np.float32)


def split_half_table(brain_h5: Path, metric: str, device: str = "cpu", permutations: int = 10,
                     seed: int = 0) -> pd.DataFrame:
    """Per parcel of one ingested subject (``results/brain/{split}/{subject}.h5`` with halves):
    ``subject, roi, metric, n_images`` (images with 2+ trials), ``m_a, m_b`` (the halves' effective
    trials), ``m`` (the effective trials averaged by the alignment, all images), ``split_half``
    (the metric between the halves), ``reliability`` and ``ceiling`` (module docstring); and the
    metric's chance level: ``split_half_null`` (mean over ``permutations`` shuffles of half B's
    images) and ``p_split_half`` (exceedance, floor ``1 / (permutations + 1)``). Metrics such as
    RBF CKA are well above 0 for unrelated data, so a parcel without signal has a split-half score,
    and a ceiling, near its null rather than near 0: read ``ceiling`` where ``p_split_half`` is small."""
    import h5py

    from brainalign.alignment.nulls import null_scores
    from brainalign.alignment.nulls import permutations as shuffles
    from brainalign.io import InputError, Progress

    with h5py.File(brain_h5, "r") as f:
        if "half_a" not in f or "repeats_a" not in f:
            raise InputError(f"{brain_h5}: no half_a/ responses: it was ingested without halves; delete it and "
                             "rerun the ingest rule")
        subject = str(f.attrs["subject"])
        names = json.loads(f.attrs["rois"])
        repeats, repeats_a = f["repeats"][()], f["repeats_a"][()]
        rows = []
        keep = repeats >= 2
        if keep.sum() < 3:
            raise InputError(f"{brain_h5}: {int(keep.sum())} images with 2+ trials: a split-half ceiling needs more "
                             "(use more sessions)")
        m_a = effective_trials(repeats_a[keep])
        m_b = effective_trials(repeats[keep] - repeats_a[keep])
        m = effective_trials(repeats)
        perms = shuffles(int(keep.sum()), permutations, seed, subject)
        progress = Progress(len(names), f"split-half ceilings {subject}", "parcels")
        for roi in names:
            _, a, b = halves(f[f"roi/{roi}"][()], f[f"half_a/{roi}"][()], repeats, repeats_a)
            observed, null = null_scores([a], [b], metric, perms, device, what=f"split-half null {roi}")
            s, null = float(observed[0, 0]), null[:, 0, 0]
            reliability, ceiling = ceiling_from_split_half(s, m_a, m_b, m)
            rows.append({"subject": subject, "roi": roi, "metric": metric, "n_images": int(keep.sum()),
                         "m_a": m_a, "m_b": m_b, "m": m, "split_half": s, "reliability": reliability,
                         "ceiling": ceiling, "split_half_null": float(null.mean()) if len(perms) else float("nan"),
                         "p_split_half": float((1 + (null >= s).sum()) / (1 + len(perms)))})
            progress.step()
    return pd.DataFrame(rows)


def read_ceilings(paths) -> pd.DataFrame:
    """The split-half ceiling tables of several subjects as one frame: ``tgt_model`` (subject),
    ``tgt_feature`` (parcel), ``ceiling``, ``split_half``, ``reliability``."""
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    return df.rename(columns={"subject": "tgt_model", "roi": "tgt_feature"})[
        ["tgt_model", "tgt_feature", "metric", "split_half", "reliability", "ceiling", "split_half_null",
         "p_split_half"]]
