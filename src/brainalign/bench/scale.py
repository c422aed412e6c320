"""Benchmark: peak memory and wall time of the ingest and features rules at NSD's size.

    python -m brainalign.bench.scale [--workdir /tmp/bench_scale] [--part ingest|features|both]
                                     [--stimuli 9000] [--sessions 40] [--model tf_efficientnet_lite0]
                                     [--threads 2] [--images N] [--keep]

Writes a synthetic NSD release of the real shape under ``--workdir`` and runs each rule's code path
in its own subprocess, which reports its own peak RSS (``VmHWM`` of /proc/self/status: ``ru_maxrss``
of a child would include the parent's RSS at fork) and the wall and CPU time of the call:

* ``ingest``: :func:`brainalign.pipeline.ingest` of one subject, ``rois: all``, split ``paper``. The
  release: HCP_MMP1.nii.gz of NSD's func1pt8mm volume (81 x 104 x 83) with ~10^5 cortical voxels
  labelled with the 180 HCP-MMP1 parcels (no FreeSurfer folder, so ingest uses the package's label
  table), NSD's design of 750-trial sessions over 9,841 distinct images (982 of them among the shared
  1,000, so the paper split has 8,859), each shown 3 times in turn (a 4th time for 477 of them, to fill
  40 full sessions), and NSD's HDF5 betas ``betas_sessionNN.hdf5`` (dataset ``betas``, int16,
  (750, Z, Y, X), per-voxel chunks (750, 1, 1, 1), uncompressed). One session file is written and
  hard-linked as the others: every session has the same betas, which changes neither the memory nor
  the work per session (its reads come from the page cache after the first, so I/O time is a lower
  bound). Bound: two float32 running sums of n_stimuli x n_voxels (all trials, and the odd-numbered
  half for the split-half ceilings: 8 bytes x n_stimuli x n_voxels) plus one session (750 x n_voxels
  float32).
* ``features``: :func:`brainalign.pipeline.extract` (the ``features`` rule) of one vision model on CPU
  over ``--stimuli`` images of NSD's ``nsd_stimuli.hdf5`` (``imgBrick`` (N, 425, 425, 3) uint8, gzip, one
  image a chunk, smooth low-entropy content so it stays small on disk), ids in random order. Bound:
  the float32 features held, sum over layers of n_stimuli x dim x 4 bytes. ``--images N`` runs the
  job on N of the stimuli only and extrapolates its wall time linearly (the peak RSS is N's).

The table gives per part its shape, wall time, CPU time (user + system, all threads), peak RSS, the
RSS before the call (interpreter and libraries: ``base``) and the bound; the data the bound counts is
``peak - base``. Scratch data is deleted at the end unless ``--keep`` (a kept release is reused by the
next run with the same sizes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.data.nsd import NSDLayout
from brainalign.io import proc_bytes

SUBJECT = "subj01"
#: NSD's func1pt8mm volume (X, Y, Z) and its design.
VOLUME = (81, 104, 83)
TRIALS_PER_SESSION = 750
RUNS_PER_SESSION = 12
N_SUBJECT_IMAGES = 10_000
N_SHARED = 1_000
#: The paper's subject: 9,841 distinct images, 982 of them shared, so the paper split has 8,859.
N_SEEN, N_SHARED_SEEN = 9_841, 982
#: Voxels per parcel, drawn uniformly: 180 parcels x ~555 = ~10^5 cortical voxels.
VOXELS_PER_PARCEL = (450, 661)
BETAS_CHUNKS = (TRIALS_PER_SESSION, 1, 1, 1)
IMAGE_SIZE = 425


# ----------------------------------------------------------------------------- measuring


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads): unlike wall time, not inflated
    when other processes share the cores."""
    t = os.times()
    return t.user + t.system


def _stamp_matches(folder: Path, params: dict) -> bool:
    stamp = folder / "params.json"
    return stamp.is_file() and json.loads(stamp.read_text()) == params


def _write_stamp(folder: Path, params: dict) -> None:
    (folder / "params.json").write_text(json.dumps(params))


# ----------------------------------------------------------------------------- the ingest release


def trial_order(n_trials: int, seen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``n_trials`` trials over ``seen``: every image once in random order, then again, and so on."""
    reps = -(-n_trials // len(seen))
    return np.concatenate([rng.permutation(seen) for _ in range(reps)])[:n_trials]


def write_ingest_release(root: Path, sessions: int, seed: int = 0) -> dict:
    """One subject's ingest inputs in NSD's layout under ``root`` (see the module docstring)."""
    import h5py
    import nibabel as nib
    from scipy.io import savemat

    from brainalign.data.mini_nsd import MiniNSDSpec, make_parcel_volume
    from brainalign.io import atomic_path
    from brainalign.resources import hcp_parcels

    layout = NSDLayout(root)
    rng = np.random.default_rng(seed)

    # experiment design: the subject's 10,000 images, the first 1,000 shared (73KIDs, 1-based)
    kids = 1 + rng.permutation(73_000)[:N_SUBJECT_IMAGES]
    shared = np.sort(kids[:N_SHARED])
    subjectim = np.tile(kids, (8, 1))
    seen = np.concatenate([np.arange(N_SHARED_SEEN), N_SHARED + np.arange(N_SEEN - N_SHARED_SEEN)]) + 1  # 10KIDs
    n_trials = sessions * TRIALS_PER_SESSION
    order = trial_order(n_trials, seen, rng)
    with atomic_path(layout.expdesign, suffix=".mat") as tmp:
        savemat(tmp, {"masterordering": order[None, :], "subjectim": subjectim, "sharedix": shared[None, :]})
    within = np.arange(n_trials) % TRIALS_PER_SESSION
    per_run = -(-TRIALS_PER_SESSION // RUNS_PER_SESSION)
    trials = pd.DataFrame({
        "SUBJECT": 1, "SESSION": np.arange(n_trials) // TRIALS_PER_SESSION + 1, "RUN": within // per_run + 1,
        "TRIAL": within % per_run + 1, "73KID": kids[order - 1], "10KID": order,
    })
    with atomic_path(layout.responses(SUBJECT), suffix=".tsv") as tmp:
        trials.to_csv(tmp, sep="\t", index=False)

    # HCP-MMP1 labels: -1 outside the brain, 0 unlabelled, 1..180 (both hemispheres share an id)
    spec = MiniNSDSpec(planted={name: None for name in hcp_parcels()["name"]}, voxels_per_parcel=VOXELS_PER_PARCEL)
    vol = make_parcel_volume(spec, rng, VOLUME)
    with atomic_path(layout.parcel_volume(SUBJECT), suffix=".nii.gz") as tmp:
        nib.save(nib.Nifti1Image(vol, np.diag([1.8, 1.8, 1.8, 1.0])), tmp)

    # one session of betas (trials, Z, Y, X), written a z-plane at a time; the others are hard links
    first = layout.betas(SUBJECT, 1, "hdf5")
    nx, ny, nz = VOLUME
    with atomic_path(first, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset("betas", shape=(TRIALS_PER_SESSION, nz, ny, nx), dtype="int16", chunks=BETAS_CHUNKS)
        for z in range(nz):
            brain = (vol[:, :, z].T >= 0)[None]  # (1, Y, X)
            plane = rng.integers(-900, 900, size=(TRIALS_PER_SESSION, ny, nx), dtype=np.int16)
            dset[:, z] = np.where(brain, plane, 0)
    for s in range(2, sessions + 1):
        link = layout.betas(SUBJECT, s, "hdf5")
        link.unlink(missing_ok=True)
        os.link(first, link)
    return {"n_voxels": int((vol > 0).sum()), "n_trials": n_trials, "session_bytes": first.stat().st_size}


def ingest_job(root: Path, out: Path) -> dict:
    """Run the ingest rule's code path on ``root``; its wall time, RSS before and peak, and shapes."""
    import h5py
    import nibabel  # noqa: F401 - imported before the baseline, as the rule's process has it loaded
    import scipy.io  # noqa: F401

    from brainalign import pipeline

    base = proc_bytes("VmRSS")
    t0, c0 = time.perf_counter(), cpu_seconds()
    pipeline.ingest(root, SUBJECT, "paper", "all", False, out)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = proc_bytes("VmHWM")
    with h5py.File(out, "r") as f:
        n_stimuli = len(f["stimulus_ids"])
        dims = [f["roi"][name].shape[1] for name in json.loads(f.attrs["rois"])]
    n_voxels = sum(dims)
    sessions = len(list(NSDLayout(root).betas_dir(SUBJECT).glob("betas_session*.hdf5")))
    # the two running sums (every trial; the odd-numbered half) and one session as float32
    bound = 8 * n_stimuli * n_voxels + 4 * TRIALS_PER_SESSION * n_voxels
    return {"part": "ingest", "shape": f"{n_stimuli} stim x {n_voxels} vox ({len(dims)} ROIs), "
            f"{sessions} x {TRIALS_PER_SESSION} trials", "wall_s": wall, "cpu_s": cpu, "peak": peak, "base": base,
            "bound": bound, "n_stimuli": n_stimuli, "n_voxels": n_voxels, "n_rois": len(dims),
            "sessions": sessions, "out_bytes": out.stat().st_size}


# ----------------------------------------------------------------------------- the features release


def write_feature_release(root: Path, n_stimuli: int, seed: int = 0, block: int = 64) -> Path:
    """NSD's ``nsd_stimuli.hdf5`` with ``n_stimuli`` images and a stimuli table of them; returns the table.

    Image ``i`` is one row of colour ramps repeated down the image: low entropy, so gzip keeps the
    file small, but different per image.
    """
    import h5py

    from brainalign.io import atomic_path, write_csv

    layout = NSDLayout(root)
    cols = np.arange(IMAGE_SIZE)[:, None]
    with atomic_path(layout.stimuli, suffix=".hdf5") as tmp, h5py.File(tmp, "w") as f:
        dset = f.create_dataset("imgBrick", shape=(n_stimuli, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="uint8",
                                chunks=(1, IMAGE_SIZE, IMAGE_SIZE, 3), compression="gzip", compression_opts=1)
        for start in range(0, n_stimuli, block):
            idx = np.arange(start, min(start + block, n_stimuli))
            ramp = cols[None] * (1 + idx[:, None, None] % 7) + 37 * idx[:, None, None] + [0, 85, 170]
            rows = (ramp % 256).astype(np.uint8)  # (n, 425, 3): one row of each image
            dset[idx[0] : idx[-1] + 1] = np.broadcast_to(rows[:, None], (len(idx), IMAGE_SIZE, IMAGE_SIZE, 3))
    ids = 1 + np.random.default_rng(seed).permutation(n_stimuli)  # 73KIDs, in no particular order
    table = root / "stimuli.csv"
    write_csv(pd.DataFrame({"nsd_id": ids, "caption": [f"synthetic image {i}" for i in ids]}), table)
    return table


def features_job(root: Path, registry: Path, model: str, threads: int, out: Path, images: int | None = None) -> dict:
    """Run the features rule's code path for one model on CPU; its wall time, RSS before and peak, shapes.

    ``images``: run on the first ``images`` stimuli of the table only; the wall time is then
    extrapolated linearly to the whole table (the peak RSS is the one measured).
    """
    import h5py
    import timm  # noqa: F401 - imported before the baseline, as the rule's process has it loaded
    import torch

    import brainalign.models.features  # noqa: F401
    from brainalign import pipeline

    table = root / "stimuli.csv"
    n_table = len(pd.read_csv(table))
    if images is not None and images < n_table:
        table = root / f"stimuli_first{images}.csv"
        pd.read_csv(root / "stimuli.csv").head(images).to_csv(table, index=False)
    torch.set_num_threads(threads)
    base = proc_bytes("VmRSS")
    t0, c0 = time.perf_counter(), cpu_seconds()
    pipeline.extract(registry, model, [table], NSDLayout(root).stimuli, "cpu", [out])
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = proc_bytes("VmHWM")
    with h5py.File(out, "r") as f:
        n_run = len(f["stimulus_ids"])
        dims = [f["layers"][k].shape[1] for k in sorted(f["layers"])]
    timed = "" if n_run == n_table else f", timed on {n_run}, extrapolated"
    return {"part": "features", "shape": f"{n_table} stim x {len(dims)} layers (dims {dims}){timed}",
            "wall_s": wall * n_table / n_run, "cpu_s": cpu * n_table / n_run, "wall_measured_s": wall,
            "peak": peak, "base": base,
            "bound": 4 * n_run * sum(dims), "n_stimuli": n_table, "n_run": n_run, "dims": dims, "model": model,
            "threads": threads, "torch_threads": torch.get_num_threads(), "out_bytes": out.stat().st_size}


# ----------------------------------------------------------------------------- driver


def run_child(part: str, folder: Path, args: argparse.Namespace) -> dict:
    """Run one part's job in a fresh interpreter (logs to stderr); return its JSON report."""
    cmd = [sys.executable, "-m", "brainalign.bench.scale", "--child", part, "--workdir", str(folder),
           "--model", args.model, "--registry", str(args.registry), "--threads", str(args.threads)]
    if args.images is not None:
        cmd += ["--images", str(args.images)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(part: str, folder: Path, args: argparse.Namespace) -> None:
    """Write the part's release under ``folder`` unless a kept one with the same sizes is there."""
    size = {"sessions": args.sessions} if part == "ingest" else {"stimuli": args.stimuli}
    params = {"part": part, **size, "version": 1}
    if _stamp_matches(folder, params):
        print(f"{part}: reusing the release in {folder}")
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    if part == "ingest":
        info = write_ingest_release(folder, args.sessions)
        what = (f"{info['n_voxels']} labelled voxels, {info['n_trials']} trials, one betas session of "
                f"{info['session_bytes'] / 1e9:.2f} GB hard-linked {args.sessions} times")
    else:
        write_feature_release(folder, args.stimuli)
        size = NSDLayout(folder).stimuli.stat().st_size
        what = f"{args.stimuli} images of {IMAGE_SIZE} x {IMAGE_SIZE}, {size / 1e6:.0f} MB on disk"
    _write_stamp(folder, params)
    print(f"{part}: release written to {folder} in {time.perf_counter() - t0:.0f} s ({what})")


def print_table(rows: list[dict]) -> None:
    w = max([len(r["shape"]) for r in rows] + [10]) + 2
    print(f"\n{'part':<10}{'shape':<{w}}{'wall s':>9}{'CPU s':>9}{'peak RSS GB':>13}{'base GB':>9}{'bound GB':>10}"
          f"{'(peak-base)/bound':>19}")
    for r in rows:
        ratio = (r["peak"] - r["base"]) / r["bound"]
        print(f"{r['part']:<10}{r['shape']:<{w}}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['peak'] / 1e9:>13.2f}"
              f"{r['base'] / 1e9:>9.2f}{r['bound'] / 1e9:>10.3f}{ratio:>19.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_scale"), help="scratch folder")
    ap.add_argument("--part", choices=["ingest", "features", "both"], default="both")
    ap.add_argument("--stimuli", type=int, default=9000, help="images of the feature job")
    ap.add_argument("--sessions", type=int, default=40, help="betas sessions of 750 trials")
    ap.add_argument("--model", default="tf_efficientnet_lite0", help="vision model of the registry")
    ap.add_argument("--registry", type=Path, default=Path("config/models.yaml"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the feature job")
    ap.add_argument("--images", type=int, help="run the feature job on this many of the --stimuli only; its wall "
                    "time is extrapolated linearly, its peak RSS is measured at this many")
    ap.add_argument("--keep", action="store_true", help="keep the scratch data (reused by the next run)")
    ap.add_argument("--child", choices=["ingest", "features"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.child:  # inside the measured subprocess: --workdir is the part's own folder
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
        out = a.workdir / f"{a.child}_out.h5"
        report = (ingest_job(a.workdir, out) if a.child == "ingest"
                  else features_job(a.workdir, a.registry, a.model, a.threads, out, a.images))
        out.unlink()
        print(json.dumps(report))
        return

    parts = ["ingest", "features"] if a.part == "both" else [a.part]
    rows = []
    try:
        for part in parts:
            folder = a.workdir / part
            prepare(part, folder, a)
            rows.append(run_child(part, folder, a))
            print(f"{part}: {json.dumps(rows[-1])}")
    finally:
        if not a.keep:
            for part in parts:
                shutil.rmtree(a.workdir / part, ignore_errors=True)
    print_table(rows)
    print("\nbound: ingest 2 x 4 B x n_stimuli x n_voxels (the sums of every trial and of the odd-numbered half) + "
          "one session (750 x n_voxels float32); features 4 B x n_stimuli x sum of layer dims. "
          "base: RSS before the call; CPU s: user + system time of the job's process "
          "(wall time grows when other processes share the cores).")


if __name__ == "__main__":
    main()
