"""The brain's side of alignment, computed once per subject and reused by every model.

An align job scores the layers of one model against the ROIs of one subject. Most of what the
streaming engine (:mod:`brainalign.alignment.engine`) does for the ROIs does not depend on the model: their
exact neighbour lists at the largest k (and the Gram values there), CKNNA's sums of each ROI's own
masked kernel, and for every stimulus-plane kernel the centring estimate, the row sums and the
self product of each ROI's kernel. :func:`compute_summary` computes them in one pass over the
stimulus plane (the engine's own code, with no source), :func:`write_summary` stores them (HDF5,
atomically, with :data:`FORMAT_VERSION`), and ``score_matrices(..., brain=summary)`` reads them: an
align job then forms the ROIs' Gram rows for the kernel blocks only, in float32.

What still depends on both sides (the products of the layers' and the ROIs' kernel blocks, the
neighbour metrics of each pair) is computed by the align job from these summaries. The ROIs'
z-scores are not stored: z-scoring the responses costs O(n v), a second, and the brain file already
holds them; the summary records the ROIs' widths and a checksum of each, so that a summary never
meets other responses than its own.

Sizes (n stimuli, T ROIs, k the largest neighbour k, c CKNNA's largest k, s kernels): neighbour
lists ``2 n T k`` bytes (int16), CKNNA's lists and values ``10 n T c``, kernels ``16 s T n``. At the
paper's scale (n = 8,859, 180 ROIs, the 27 metrics: k = 400, c = 50, s = 12) that is 1.28 + 0.80 +
0.31 = 2.4 GB per subject and split.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainalign.io import InputError, atomic_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _checksum(z) -> float:
    """A cheap fingerprint of one ROI's responses (z-scores, torch or numpy): a weighted sum of them."""
    import torch

    z = torch.as_tensor(z).double()
    w = torch.linspace(1.0, 2.0, z.shape[0], dtype=torch.float64, device=z.device)
    v = torch.linspace(1.0, 3.0, z.shape[1], dtype=torch.float64, device=z.device)
    return float(w @ (z * z) @ v)


@dataclass
class BrainSummary:
    """What every align job of one subject needs of its ROIs (see the module's docstring).

    Arrays may be numpy arrays or h5py datasets (read block by block):
    ``lists`` (n, T, k) neighbour lists, best first; ``cknna`` (T, n, c) CKNNA's lists and
    ``cknna_vals`` (n, T, c) the Gram values there; ``cknna_self`` {metric: (3, T)};
    ``kernel_a`` (s, T, n) centring estimates, ``kernel_c`` (s, T), ``rowsum`` (s, T, n),
    ``self_prod`` (s, T) per kernel of ``kernels`` [(kind, sigma)]."""

    n: int
    widths: list
    metrics: list
    kernels: list = field(default_factory=list)
    k_max: int = 0
    k_cknna: int = 0
    cknna_names: list = field(default_factory=list)
    lists: object = None
    cknna: object = None
    cknna_vals: object = None
    cknna_self: dict = field(default_factory=dict)
    kernel_a: object = None
    kernel_c: object = None
    rowsum: object = None
    self_prod: object = None
    checksums: list = field(default_factory=list)
    seconds: float = 0.0
    _file: object = None

    # ---------------------------------------------------------------- what the engine reads

    def check(self, plan, n: int, zs: Sequence) -> None:
        """Raise ValueError unless this summary is of the targets whose z-scores are ``zs`` and
        covers ``plan``'s metrics."""
        widths = [int(z.shape[1]) for z in zs]
        if n != self.n or widths != list(self.widths):
            raise ValueError(f"the brain summary is of {len(self.widths)} ROIs and {self.n} stimuli, the targets "
                             f"are {len(widths)} ROIs and {n} stimuli: recompute the summary from these responses")
        for t, z in enumerate(zs):
            if not np.isclose(_checksum(z), self.checksums[t], rtol=1e-6, atol=1e-6):
                raise ValueError(f"the brain summary is not of these responses (ROI {t} differs): recompute it")
        missing = [name for name, kind, sigma in plan.kernels if (kind, float(sigma)) not in self._kernel_keys]
        missing += [name for name, _ in plan.cknna if name not in self.cknna_names]
        if plan.k_max > self.k_max or plan.k_cknna > self.k_cknna:
            missing.append(f"neighbours at k = {plan.k_max} (it has {self.k_max})")
        if missing:
            raise ValueError(f"the brain summary was computed for metrics {self.metrics}, not for {missing}: "
                             "recompute it with these metrics")

    @property
    def _kernel_keys(self) -> list:
        return [(kind, float(sigma)) for kind, sigma in self.kernels]

    def kernel_index(self, kind: str, sigma: float) -> int:
        return self._kernel_keys.index((kind, float(sigma)))

    def lists_block(self, r0: int, r1: int, k: int) -> np.ndarray:
        return np.asarray(self.lists[r0:r1, :, :k])

    def cknna_lists(self, t: int, k: int) -> np.ndarray:
        return np.asarray(self.cknna[t, :, :k])

    def cknna_block(self, r0: int, r1: int, k: int) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(self.cknna[:, r0:r1, :k]).transpose(1, 0, 2))

    def vals_block(self, r0: int, r1: int, k: int) -> np.ndarray:
        return np.asarray(self.cknna_vals[r0:r1, :, :k])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def nbytes(self) -> int:
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in (
            self.lists, self.cknna, self.cknna_vals, self.kernel_a, self.rowsum) if a is not None)


def compute_summary(targets: Sequence, metrics="all", device: str = "cpu", max_bytes: int | None = None,
                    dtype: str = "float32", path: str | Path | None = None, **attrs) -> BrainSummary:
    """The summary of ``targets`` (arrays or loaders, as for :func:`brainalign.alignment.metrics.score_matrices`)
    for ``metrics``: one pass of the engine over the stimulus plane with the targets alone.

    With ``path``, the neighbour lists and values are written to that HDF5 file block by block as
    they are found (atomically: a temporary file renamed at the end; ``attrs`` stored beside), so
    the job never holds them, and the summary read back from it is returned."""
    if path is not None:
        import h5py

        with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
            _compute(targets, metrics, device, max_bytes, dtype, f, attrs)
        return read_summary(path)
    return _compute(targets, metrics, device, max_bytes, dtype, None, {})


def _compute(targets, metrics, device, max_bytes, dtype, f, attrs) -> BrainSummary:
    import torch

    from brainalign.alignment import engine
    from brainalign.alignment.metrics import default_max_bytes, resolve_metrics

    t0 = time.perf_counter()
    specs = resolve_metrics(metrics)
    plan = engine.Plan.of(specs)
    store = getattr(torch, dtype)
    if max_bytes is None:
        max_bytes = default_max_bytes(device)
    tgt = []
    for x in targets:
        tgt.append(engine.prepare(x() if callable(x) else x, device))
        engine.release_memory()
    if not tgt:
        raise ValueError("a brain summary needs at least one target representation")
    n, T = tgt[0].z.shape[0], len(tgt)
    for r in tgt:
        if r.z.ndim != 2 or r.z.shape[0] != n:
            raise ValueError(f"every target must be (n_stimuli, n_features) with n_stimuli = {n}; "
                             f"got {tuple(r.z.shape)}")
    if plan.k_max >= n:
        raise ValueError(f"k = {plan.k_max} needs more than k stimuli, got n = {n}; drop that metric or add stimuli")
    out = BrainSummary(n=n, widths=[int(r.z.shape[1]) for r in tgt], metrics=[s.name for s in specs],
                       kernels=[(kind, float(sigma)) for _, kind, sigma in plan.kernels], k_max=plan.k_max,
                       k_cknna=plan.k_cknna, cknna_names=[name for name, _ in plan.cknna],
                       checksums=[_checksum(r.z) for r in tgt])
    idx = np.int16 if n <= 32767 else np.int32

    def array(key, shape, dt):
        if f is None:
            return np.empty(shape, dtype=dt)
        return f.create_dataset(key, shape=shape, dtype=dt, chunks=_chunks(key, shape))

    if plan.mutual or plan.cycle:
        out.lists = array("lists", (n, T, plan.k_max), idx)
    if plan.k_cknna:
        out.cknna = array("cknna", (T, n, plan.k_cknna), idx)
        out.cknna_vals = array("cknna_vals", (n, T, plan.k_cknna), np.float64)
    final = {}

    def capture(r0, r1, blk):
        if r0 is None:
            final["acc"], final["cka"] = blk
            return
        b = r1 - r0
        if plan.mutual or plan.cycle:
            out.lists[r0:r1] = blk.flat.view(b, T, plan.k_max).cpu().numpy()
        if plan.k_cknna:
            out.cknna[:, r0:r1] = blk.flat_c.view(b, T, plan.k_cknna).transpose(0, 1).cpu().numpy()
            out.cknna_vals[r0:r1] = blk.vals_c.cpu().numpy()

    st = engine.Stats(dtype=dtype)
    clock = engine._Clock(st, device, False)
    if plan.plane:
        # the engine's passes with no source: every target-only sum, block by block
        engine._plane([], tgt, plan, n, device, max_bytes, store, st, clock, capture=capture)
        acc, cka = final["acc"], final["cka"]
        out.cknna_self = {name: acc.self_tgt[name].cpu().numpy() for name, _ in plan.cknna}
        if cka is not None:
            out.kernel_a = cka.a.double().cpu().numpy()
            out.kernel_c = cka.c.double().reshape(len(plan.kernels), T).cpu().numpy()
            out.rowsum = cka.rowsum.double().cpu().numpy()
            out.self_prod = cka.self_prod.cpu().numpy()
    out.seconds = time.perf_counter() - t0
    if f is not None:
        _write_into(f, out, attrs, large=False)
    return out


def _chunks(key: str, shape: tuple) -> tuple | None:
    """Row blocks for the datasets read (or written) a block of stimuli at a time."""
    if key in ("lists", "cknna_vals"):
        return (min(shape[0], 64),) + tuple(shape[1:])
    if key == "cknna":
        return (shape[0], min(shape[1], 64), shape[2])
    return None


def _write_into(f, summary: BrainSummary, attrs: dict, large: bool = True) -> None:
    meta = {"format_version": FORMAT_VERSION, "n": summary.n, "widths": summary.widths, "metrics": summary.metrics,
            "kernels": summary.kernels, "k_max": summary.k_max, "k_cknna": summary.k_cknna,
            "cknna_names": summary.cknna_names, "checksums": summary.checksums, "seconds": summary.seconds} | attrs
    f.attrs["summary"] = json.dumps(meta)
    for key in ("lists", "cknna", "cknna_vals", "kernel_a", "kernel_c", "rowsum", "self_prod"):
        arr = getattr(summary, key)
        if arr is None or (not large and key in ("lists", "cknna", "cknna_vals")):
            continue
        f.create_dataset(key, data=arr, chunks=_chunks(key, arr.shape))
    for name, sums in summary.cknna_self.items():
        f.create_dataset(f"cknna_self/{name}", data=sums)


def write_summary(summary: BrainSummary, path: str | Path, **attrs) -> None:
    """Write ``summary`` to HDF5 at ``path`` atomically; ``attrs`` are stored beside (subject, split...)."""
    import h5py

    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        _write_into(f, summary, attrs)


def read_summary(path: str | Path, in_memory: bool = False) -> BrainSummary:
    """The summary at ``path``: small arrays loaded, neighbour lists and values read block by block
    from the open file (``in_memory``: loaded too). Raises InputError on another format version."""
    import h5py

    path = Path(path)
    f = h5py.File(path, "r")
    try:
        meta = json.loads(f.attrs["summary"])
    except KeyError:
        f.close()
        raise InputError(f"{path}: not a brain summary; delete it and rerun the workflow") from None
    if meta.get("format_version") != FORMAT_VERSION:
        f.close()
        raise InputError(f"{path}: brain summary format {meta.get('format_version')}, this version reads "
                         f"{FORMAT_VERSION}; delete it and rerun the workflow (it is recomputed)")

    def get(key, lazy):
        if key not in f:
            return None
        return f[key] if lazy and not in_memory else f[key][()]

    out = BrainSummary(
        n=meta["n"], widths=meta["widths"], metrics=meta["metrics"], kernels=[tuple(k) for k in meta["kernels"]],
        k_max=meta["k_max"], k_cknna=meta["k_cknna"], cknna_names=meta["cknna_names"],
        lists=get("lists", True), cknna=get("cknna", False), cknna_vals=get("cknna_vals", True),
        cknna_self={name: f[f"cknna_self/{name}"][()] for name in meta["cknna_names"]},
        kernel_a=get("kernel_a", False), kernel_c=get("kernel_c", False), rowsum=get("rowsum", False),
        self_prod=get("self_prod", False), checksums=meta["checksums"], seconds=meta.get("seconds", 0.0), _file=f)
    if in_memory:
        out.close()
    return out
