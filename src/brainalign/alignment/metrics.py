"""The alignment metrics: the paper's 27 variants and the field's other measures, all pairs at once.

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

Beyond the paper (``metrics: every``, or the family names):

* ``linear_cka``: biased linear CKA (Kornblith et al. 2019),
  ``||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)`` on the z-scored X and Y;
* ``rsa_pearson``, ``rsa_spearman``: RDMs of correlation distance between stimulus
  patterns (``1 - r`` of two stimuli's z-scored rows, rsatoolbox's ``'correlation'``),
  compared over the upper triangle by Pearson r / by Spearman rho with average ranks
  (rsatoolbox's ``'corr'`` / ``'spearman'``), see :mod:`brainalign.alignment.rsa`;
* ``ridge``: a cross-validated ridge encoding model from the layer to every voxel,
  the mean Pearson r of the held-out predictions over the ROI's voxels, see
  :mod:`brainalign.alignment.encoding`; ``ridge_nc``: the same over ``r / sqrt(NC)``, each voxel's r
  divided by the square root of its noise ceiling (needs ``voxel_ceilings``).

How pairs are computed: see :mod:`brainalign.alignment.engine`. A job streams the
stimulus x stimulus plane in blocks of whole rows, computes each kernel entry once
per sigma, forms all (source, target) CKA products of a block as one matrix product
of stacked kernel blocks, and reads every neighbour metric off O(k) entries per pair
and row. No n x n matrix is ever held, and no pair forms an n x n x n product.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CKA_SIGMAS: tuple[int, ...] = tuple(range(12, 101, 8))
CKNNA_K: dict[str, int] = {"cknna": 12, "cknna_10": 10, "cknna_50": 50}
MUTUAL_KNN_K: tuple[int, ...] = (20, 40, 60, 80, 200, 400)
CYCLE_KNN_K: tuple[int, ...] = (40, 60, 80, 100, 200, 400)
EPS_ZSCORE = 1e-8
EPS_CKA = 1e-6
#: the paper's families (``metrics: all``) and the ones beyond it (``metrics: every``)
PAPER_FAMILIES = ("cka", "cknna", "mutual_knn", "cycle_knn")
OTHER_FAMILIES = ("linear_cka", "rsa", "ridge")


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
    reg["linear_cka"] = MetricSpec("linear_cka", "linear_cka", 0)
    reg["rsa_pearson"] = MetricSpec("rsa_pearson", "rsa", 0)
    reg["rsa_spearman"] = MetricSpec("rsa_spearman", "rsa", 1)
    reg["ridge"] = MetricSpec("ridge", "ridge", 0)
    # needs each voxel's noise ceiling: by name only (the workflow adds it beside ridge where the
    # release has NSD's ncsnr), never through 'every' or the ridge family
    reg["ridge_nc"] = MetricSpec("ridge_nc", "ridge_nc", 0)
    return reg


METRICS: dict[str, MetricSpec] = _registry()
#: neighbour variants with any k: ``mutual_knn_<k>``, ``cycle_knn_<k>``, ``cknna_<k>`` (e.g. ``mutual_knn_10``,
#: platonic-rep's default); the registry above lists the paper's values. CKA's sigmas stay the paper's 12
#: (a name such as ``cka_37`` is a typo to report, not a kernel width to guess)
_PARAMETRIC = re.compile(r"(mutual_knn|cycle_knn|cknna)_([1-9][0-9]*)")


def metric_spec(name: str) -> MetricSpec | None:
    """The variant called ``name``: a registered one (:data:`METRICS`), or a neighbour family with any
    positive k (``mutual_knn_10``, ``cycle_knn_5``, ``cknna_25``); None if neither."""
    if name in METRICS:
        return METRICS[name]
    m = _PARAMETRIC.fullmatch(name)
    return MetricSpec(name, m.group(1), int(m.group(2))) if m else None

#: the paper's 27 variants: what ``metrics: all`` means (reproduction)
ALL_METRICS: list[str] = [n for n, s in METRICS.items() if s.family in PAPER_FAMILIES]
#: every variant of every family: ``metrics: every`` (not ``ridge_nc``, which needs voxels' noise ceilings)
EVERY_METRICS: list[str] = [n for n in METRICS if n != "ridge_nc"]


def resolve_metrics(metrics: str | Sequence[str]) -> list[MetricSpec]:
    """Metric names to specs: variant names, ``'all'`` (the paper's 27), ``'every'`` (every
    family), family names (``'cka'``, ``'cknna'``, ``'mutual_knn'``, ``'cycle_knn'``,
    ``'linear_cka'``, ``'rsa'``, ``'ridge'``) or glob patterns (``'cknna*'``: the ``cknna``
    name itself is the k = 12 variant)."""
    from fnmatch import fnmatchcase

    if isinstance(metrics, str):
        metrics = [metrics]
    out: list[MetricSpec] = []
    for name in metrics:
        if "*" in name or "?" in name:
            matched = [s for n, s in METRICS.items() if fnmatchcase(n, name)]
            if not matched:
                raise ValueError(f"metric pattern {name!r} matches no metric; known: {', '.join(EVERY_METRICS)}")
            out.extend(matched)
        elif name == "all":
            out.extend(METRICS[n] for n in ALL_METRICS)
        elif name == "every":
            out.extend(METRICS[n] for n in EVERY_METRICS)
        elif metric_spec(name) is not None:
            out.append(metric_spec(name))
        elif any(spec.family == name for spec in METRICS.values()):
            out.extend(s for s in METRICS.values() if s.family == name)
        else:
            raise ValueError(
                f"unknown metric {name!r}; known: {', '.join(EVERY_METRICS)} (or 'all' for the paper's 27, "
                "'every', a family name, or a neighbour family with any k, e.g. mutual_knn_10)"
            )
    seen: dict[str, MetricSpec] = {}
    for spec in out:
        seen.setdefault(spec.name, spec)
    return list(seen.values())


NEIGHBOUR_FAMILIES = ("cknna", "mutual_knn", "cycle_knn")


def fit_metrics(metrics: str | Sequence[str], n: int, where: str = "",
                key: str = "metrics") -> tuple[list[str], list[str]]:
    """The variants of ``metrics`` (as :func:`resolve_metrics`) that ``n`` stimuli can define, and
    those left out: a neighbour metric needs k < n. A variant named explicitly (not through
    ``all``, ``every``, a family or a pattern) that cannot be defined is an error naming it and the
    config key ``key``."""
    from brainalign.io import InputError

    named = {metrics} if isinstance(metrics, str) else set(metrics)
    kept, dropped = [], []
    for spec in resolve_metrics(metrics):
        if spec.family in NEIGHBOUR_FAMILIES and spec.param >= n:
            if spec.name in named:
                raise InputError(f"config key '{key}': {spec.name} needs more than {spec.param} stimuli; "
                                 f"{where or 'the release'} has {n}: drop it (metrics: all leaves such "
                                 "variants out by itself)")
            dropped.append(spec.name)
        else:
            kept.append(spec.name)
    return kept, dropped


# ----------------------------------------------------------------------------- the engine


def zscore(x):
    """Column z-score across stimuli (rows), unbiased std, eps 1e-8. ``x``: (n, d) tensor."""
    return (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + EPS_ZSCORE)


def neighbour_lists(gram, k: int):
    """Top-``k`` neighbours of each stimulus from a whole Gram matrix (n, n), self excluded,
    with the engine's tie rule (:func:`brainalign.alignment.engine.block_neighbours`). Returns (n, k) int64."""
    import torch

    from brainalign.alignment.engine import TIE_TOLERANCE, block_neighbours, tie_shift

    n = gram.shape[0]
    if k >= n:
        raise ValueError(f"k = {k} needs more than k stimuli, got n = {n}")
    g = gram.double().clone()
    scale = float(g.abs().max().clamp_min(torch.finfo(torch.float64).tiny)) * TIE_TOLERANCE
    return block_neighbours(g, 0, k, scale, tie_shift(n))


def default_max_bytes(device: str) -> int:
    """Memory budget of one job beyond its features: 1.5 GiB on CPU, 70% of free GPU memory."""
    import torch

    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(0.7 * free)
    return 3 << 29


def score_matrices(
    sources: Sequence, targets: Sequence, metrics: str | Sequence[str] = "all",
    device: str = "cpu", max_bytes: int | None = None, dtype: str | None = None,
    stats: dict | None = None, encoding: Mapping | None = None, voxel_ceilings: Sequence | None = None,
    brain=None,
) -> dict[str, np.ndarray]:
    """Scores of every (source, target) pair for each metric.

    Parameters
    ----------
    sources : sequence of S arrays of shape (n_stimuli, d_i) (numpy or torch), or of
        zero-argument callables that return one (loaded when the job starts, so the caller
        need not hold the raw features)
    targets : sequence of T arrays (or callables) of shape (n_stimuli, v_j)
    metrics : metric names, ``'all'``, family names or glob patterns
    device : ``'cpu'`` or a CUDA device
    max_bytes : memory budget of the job beyond its features (default
        :func:`default_max_bytes`); the row block size follows from it
    dtype : the kernel blocks, ``'float32'`` (default; products and sums still in float64)
        or ``'float64'``
    stats : a dict to fill with what the job did: ``block_rows``, ``blocks``, ``passes``,
        ``dtype``, ``fixed_bytes``, ``bytes_per_row`` and ``seconds`` per phase (timing
        synchronises the GPU, so it costs a little)
    encoding : options of the ``ridge`` metric (:func:`brainalign.alignment.encoding.ridge_scores`:
        ``folds``, ``seed``, ``alphas``, ``selection``, ``aggregate``); defaults when None
    voxel_ceilings : per target, each voxel's noise ceiling as a fraction (array of shape
        (v_j,), NaN = unknown): adds ``ridge_nc`` (the voxels' r / sqrt(NC)) when ``ridge`` runs
    brain : the targets' :class:`brainalign.alignment.summary.BrainSummary`
        (:func:`brainalign.alignment.summary.compute_summary`, computed once for any number of sources): their
        neighbour lists and kernel sums are read from it, and their Gram rows are formed (in float32)
        for the kernel blocks only. Scores equal those without it (to float32 rounding in the kernel
        metrics; neighbour counts exactly). A ValueError if it is of other targets or other metrics.

    The job streams the n x n stimulus plane in blocks of b rows (see
    :mod:`brainalign.alignment.engine`) and never holds an n x n matrix. Peak memory, with
    D = sum of all representations' widths, k = the largest neighbour k, c = CKNNA's
    largest k, s = the number of stimulus-plane kernels (CKA sigmas, plus ``linear_cka`` and
    ``rsa_pearson`` when asked for), e = 4 (float32 kernels) or 8, and
    i = 2 bytes per stimulus index below 32,768 stimuli (4 above):

    * features: ``8 n D`` (z-scored float64 copies; plus the inputs, unless passed as callables);
    * fixed: ``(2i + 2) n (S k + T c)`` for the neighbour lists and their inverses,
      ``(8 + e) (S + T) s n`` for the CKA row sums (float64) and centring estimates, and two 32 MB
      kernel stacks (the block's kernels and a copy of its diagonal square);
    * per block row: ``e (S + T) n`` (squared distances of every representation; twice that with
      ``rsa_pearson``, which keeps the patterns' correlations beside them) + ``24 n``
      (inner products) + ``28 T k + 80 T c`` (neighbour gathers);

    and b = (max_bytes - fixed) / per-row. Example: n = 8,859, 12 layers of d = 768,
    180 ROIs of v = 200, all 27 metrics: features 3.2 GB, fixed 1.2 GB, 9.8 MB per row,
    so the default 1.5 GiB budget gives blocks of 44 rows.

    With ``brain`` (a brain summary of the targets): the targets' z-scores are held in float32
    (``4 n V``, V their summed widths; float64 when ``ridge`` or ``rsa_spearman`` is asked for), their
    neighbour lists and values are read block by block from the summary, their CKNNA lists'
    inverses are held (``(i + 2) n T c``), each block row adds ``4 n`` (the targets' float32 Gram
    rows). In a float32 job reading a summary that asks for none of ``ridge``, ``rsa_spearman`` and
    ``rsa_pearson`` (which read the sources' float64 z-scores or Gram rows), each source runs its
    neighbour pass alone as it is loaded (its float64 z-scores held for it alone,
    :func:`brainalign.alignment.engine.own_neighbours`) and is then held as float32 z-scores (``4 n d_i``)
    beside its lists and its float64 Gram values at its first c neighbours (``i n k + 8 n c``), their
    inverses held for a quarter of the stimuli at a time (``(i + 2) n k / 4``): no Gram rows are formed
    after that, a block row costs the neighbour gathers only, and the kernels' distances are formed for
    sub-blocks of at most 256 MB (:data:`brainalign.alignment.engine.KERNEL_BLOCK_BYTES`, held whatever the
    block). Paper size, 3 models (36 layers of 768) a job under a 2.25 GiB budget: z-scores 0.98 GB of
    sources + 1.28 GB of ROIs, fixed 1.57 GB, 2.9 MB a row (blocks of 294 rows), peak RSS 5.44 GB
    measured.

    Depth: when the sources' z-scores (``8 n sum(d_i)``, or ``4 n sum(d_i)`` held in float32 as above)
    exceed both half the budget and
    2 x 256 MB (:data:`brainalign.alignment.engine.MIN_GROUP_BYTES`), and their widths are known without
    loading them (arrays, or loaders with a ``shape`` such as :func:`brainalign.io.h5_loader`'s),
    the sources are loaded, z-scored and scored in consecutive groups of at most
    ``max(max_bytes / 2, 256 MB)`` of z-scores, each group's passes working within the rest of the
    budget: peak memory is then the targets' z-scores + ``max_bytes`` + small constants, whatever
    the model's depth and width, and the targets' side is computed once per group (``stats``'s
    ``source_groups``). Scores do not depend on the grouping.

    ``ridge`` (:func:`brainalign.alignment.encoding.ridge_scores`) and ``rsa_spearman``
    (:func:`brainalign.alignment.rsa.rsa_spearman_scores`) run after the streaming passes within the same
    budget, on the same z-scored features.

    Returns ``{metric: array of shape (S, T)}``.
    """
    from brainalign.alignment.engine import run

    specs = resolve_metrics(metrics)
    return run(list(sources), list(targets), specs, device, max_bytes, dtype or "float32", stats,
               default_budget=default_max_bytes, encoding=encoding, voxel_ceilings=voxel_ceilings, brain=brain)


def align(source: Mapping, target: Mapping, metrics: str | Sequence[str] = "all", device: str = "cpu",
          encoding: Mapping | None = None):
    """Alignment of every (source key, target key) pair under each metric.

    Parameters
    ----------
    source : mapping name -> array (numpy or torch) of shape (n_stimuli, n_features)
    target : mapping name -> array of shape (n_stimuli, n_features), same stimuli
    metrics : metric names (see ``EVERY_METRICS``), ``'all'`` (the paper's 27), ``'every'`` or a
        family name
    device : ``'cpu'`` or ``'cuda'``
    encoding : options of the ``ridge`` metric (see :func:`score_matrices`)

    Returns a pandas DataFrame with columns ``source, target, metric, score``,
    one row per (source key, target key, metric).
    """
    import pandas as pd

    src_names, tgt_names = list(source), list(target)
    mats = score_matrices([source[k] for k in src_names], [target[k] for k in tgt_names], metrics, device,
                          encoding=encoding)
    frames = []
    for metric, mat in mats.items():
        frames.append(pd.DataFrame({
            "source": np.repeat(src_names, len(tgt_names)),
            "target": np.tile(tgt_names, len(src_names)),
            "metric": metric,
            "score": mat.reshape(-1),
        }))
    return pd.concat(frames, ignore_index=True)
