"""The documentation's figures: the demo's own outputs, copied into docs/figures/ at a web size.

Run by ``make docs-figures`` after Snakemake has built the figures (the demo's targets); never
copy an image into docs/figures/ by hand. tests/test_workflow.py regenerates the set from a demo
run and checks it against the committed one.

    python tools/docs_figures.py [--results results] [--out docs/figures] [--width 960]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# docs/figures/<name>.png <- results/figures/<path>.png: one figure of each family
FIGURES = {
    "brain_score_vs_benchmark": "performance/brain_score_vs_benchmark",
    "correlation_by_sigma": "performance/correlation_by_sigma",
    "subject_consistency": "consistency/subject_consistency",
    "metric_correlation": "metrics/metric_correlation",
    "layerwise_profiles": "layers/layerwise_profiles",
    "change_28_68": "kernel_size/change_28_68",
    "vision_score": "brain_maps/vision_score",
    "noise_ceiling": "brain_maps/noise_ceiling",
    "umap_profiles": "umap/umap_profiles",
    "training_trajectories": "trajectories/training_trajectories",
    "robustness_forest": "robustness/robustness_forest",
    "headline_by_metric": "metric_families/headline_by_metric",
}
# figures of the opt-in parts (built by `make docs-figures`, not by the demo's default target): written when
# the results hold them, kept in docs/figures/ otherwise
OPT_IN = {
    "convergence": "convergence/convergence",
}
# screenshots of the results explorer in headless Chromium (tools/explorer_screenshots.py, also run by
# `make docs-figures`; the browser test in tests/test_explorer.py takes them the same way)
SCREENSHOTS = ("explorer_index", "explorer_model")


def targets(results: str = "results") -> list[str]:
    """The Snakemake targets the documentation's figures come from."""
    return [f"{results}/figures/{path}.png" for path in {**FIGURES, **OPT_IN}.values()]


def write(results: Path, out: Path, width: int = 960) -> list[Path]:
    """Each figure of :data:`FIGURES` from ``results``, at most ``width`` pixels wide, into ``out``
    (atomically, one file at a time); returns the written paths."""
    from PIL import Image

    missing = [f"{results}/figures/{path}.png" for path in FIGURES.values()
               if not (results / "figures" / f"{path}.png").is_file()]
    if missing:
        raise SystemExit(f"docs_figures: {missing[0]} not found ({len(missing)} missing): run `make demo` "
                         "(or `make docs-figures`, which builds them) first")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    present = {n: p for n, p in OPT_IN.items() if (results / "figures" / f"{p}.png").is_file()}
    for name, path in {**FIGURES, **present}.items():
        with Image.open(results / "figures" / f"{path}.png") as im:
            im = im.convert("RGB")
            if im.width > width:
                im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
            im = im.convert("P", palette=Image.ADAPTIVE, colors=256)  # plots need no more: ~3x smaller files
            dest = out / f"{name}.png"
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=out)
            os.close(fd)
            try:
                im.save(tmp, format="PNG", optimize=True)
                os.chmod(tmp, 0o644)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        written.append(dest)
    stale = sorted(p for p in out.glob("*.png") if p.stem not in FIGURES and p.stem not in OPT_IN)
    for p in stale:  # a figure dropped from the list leaves the docs with it
        p.unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="the run's results directory (default: results)")
    ap.add_argument("--out", default="docs/figures", help="where the documentation's images go")
    ap.add_argument("--width", type=int, default=960, help="largest width in pixels")
    ap.add_argument("--targets", action="store_true", help="print the Snakemake targets and exit")
    a = ap.parse_args(argv)
    if a.targets:
        print(" ".join(targets(a.results)))
        return 0
    for p in write(Path(a.results), Path(a.out), a.width):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
