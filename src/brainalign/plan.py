"""Target planning: which statistics, figures and brain maps a configuration builds.

Pure functions of the resolved configuration and of a few facts about the inputs on disk (which
modalities have models or tables, whether the release has NSD's ncsnr files and fsaverage atlas,
whether any selected model is a training checkpoint). ``workflow/rules/common.smk`` gathers those
facts (and warns about what is left out), builds one :class:`Plan` and asks it for its targets,
so every rule of what is built when is unit-tested here without running Snakemake.

Modes: ``measured`` (NSD and models: the default), ``tables`` (``tables_from``: measurement
tables in the paper's schema) and ``paper`` (``scores_from: paper``: the paper's published
per-model scores).
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("measured", "tables", "paper")
MODALITIES = ("vision", "language")
#: the kernel sizes of the paper's published scores (cka_20 .. cka_100)
PAPER_SIGMAS = (20, 28, 36, 44, 52, 60, 68, 76, 84, 92, 100)
#: figure family -> its directory under figures/ (default: the family's name)
FIGURE_DIR = {"performance_sigma": "performance", "headline_by_metric": "metric_families"}
FIGURE_EXTS = ("png", "pdf", "csv")


def figure_stems(kernel_sizes: tuple[int, int]) -> dict[str, str]:
    """Figure family -> file stem."""
    lo, hi = kernel_sizes
    return {
        "performance": "brain_score_vs_benchmark",
        "performance_sigma": "correlation_by_sigma",
        "consistency": "subject_consistency",
        "metrics": "metric_correlation",
        "layers": "layerwise_profiles",
        "kernel_size": f"change_{lo}_{hi}",
        "umap": "umap_profiles",
        "trajectories": "training_trajectories",
        "robustness": "robustness_forest",
        "headline_by_metric": "headline_by_metric",
    }


def cka_sigma(metric: str) -> int | None:
    """The kernel size of a ``cka_<sigma>`` metric, else None."""
    head, _, tail = metric.partition("_")
    return int(tail) if head == "cka" and tail.isdigit() else None


@dataclass(frozen=True)
class Plan:
    """One configuration's targets. ``modalities``: those with selected models (measured mode) or
    with an ``*_all`` table (tables mode); ``table_metrics``: tables mode, the metrics every table
    holds; ``checkpoints``: a selected model is a training checkpoint (tables mode: a ``*_trained``
    table exists); ``ncsnr``: the release has every subject's ncsnr (always, for the mini-NSD);
    ``atlas``: brain maps can be drawn (measured mode: the mini-NSD or a release with NSD's
    fsaverage labels; the other modes: a real release's labels only)."""

    results: str
    split: str
    subjects: tuple[str, ...]
    modalities: tuple[str, ...]
    metrics: tuple[str, ...]
    headline: str = "cka_36"
    kernel_sizes: tuple[int, int] = (28, 68)
    mode: str = "measured"
    null_permutations: int = 0
    table_metrics: tuple[str, ...] = ()
    checkpoints: bool = False
    ncsnr: bool = True
    atlas: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: one of {MODES}")

    @property
    def measured(self) -> bool:
        return self.mode == "measured"

    @property
    def available(self) -> tuple[str, ...]:
        """The metrics the run's tables hold: the config's (measured), those every table holds (tables)."""
        return self.table_metrics if self.mode == "tables" else self.metrics

    def _kernel_pair(self) -> bool:
        return {f"cka_{k}" for k in self.kernel_sizes} <= set(self.available)

    # ------------------------------------------------------------------ statistics
    def noise_ceiling_files(self) -> list[str]:
        """NSD's per-parcel noise ceilings (measured runs on a release with ncsnr)."""
        if not self.measured or not self.ncsnr:
            return []
        return [f"{self.results}/stats/noise_ceiling/{self.split}/{s}.csv" for s in self.subjects]

    def split_half_files(self) -> list[str]:
        """The headline metric's split-half ceilings per subject (measured runs)."""
        if not self.measured:
            return []
        return [f"{self.results}/stats/split_half_ceiling/{self.split}/{s}.csv" for s in self.subjects]

    def roi_score_files(self) -> list[str]:
        """Per-ROI scores with their ceilings (measured runs whose metrics include the headline one)."""
        if not self.split_half_files() or self.headline not in self.metrics:
            return []
        return [f"{self.results}/stats/roi_scores_{mod}.csv" for mod in self.modalities]

    def null_stats_files(self) -> list[str]:
        """Permutation nulls of the headline metric (measured runs with ``null_permutations > 0``)."""
        if not self.measured or not self.null_permutations:
            return []
        return [f"{self.results}/stats/nulls_{mod}{end}" for mod in self.modalities
                for end in (".parquet", "_parcels.csv")]

    def score_modalities(self) -> list[str]:
        return list(MODALITIES) if self.mode == "paper" else list(self.modalities)

    def score_files(self) -> list[str]:
        return [f"{self.results}/stats/model_scores_{mod}.csv" for mod in self.score_modalities()]

    def sigmas(self) -> list[int]:
        """Kernel sizes of the correlation tables built by default: the paper's 11 (precomputed),
        every one the tables hold (tables mode), the headline one (measured; any other is one
        target away)."""
        if set(self.score_modalities()) != set(MODALITIES):
            return []
        if self.mode == "paper":
            return list(PAPER_SIGMAS)
        if self.mode == "tables":
            return [s for s in map(cka_sigma, self.table_metrics) if s is not None]
        sigma = cka_sigma(self.headline)
        return [sigma] if sigma is not None and self.headline in self.metrics else []

    def robustness_files(self) -> list[str]:
        """The sound statistics beside the paper's, at the headline kernel size."""
        sigma = cka_sigma(self.headline)
        if set(self.score_modalities()) != set(MODALITIES) or sigma is None:
            return []
        if self.mode != "paper" and self.headline not in self.available:
            return []
        return [f"{self.results}/stats/robustness_sigma{sigma}.csv"]

    def headline_by_metric_files(self) -> list[str]:
        """Per modality and metric variant, the headline correlation with its robustness columns
        (every mode with model scores)."""
        return [f"{self.results}/stats/headline_by_metric.csv"] if self.score_modalities() else []

    def stats_files(self) -> list[str]:
        return ([f"{self.results}/stats/correlation_sigma{s}.csv" for s in self.sigmas()] + self.robustness_files()
                + self.headline_by_metric_files())

    # ------------------------------------------------------------------ figures
    def figure_families(self) -> list[str]:
        """The figure families this configuration can build."""
        robust = ["robustness"] if self.robustness_files() else []
        robust += ["headline_by_metric"] if self.headline_by_metric_files() else []
        if self.mode == "paper":
            return ["performance", "performance_sigma", "consistency", "kernel_size", *robust]
        out = ["performance", "performance_sigma", *robust] if self.score_modalities() else []
        if not self.modalities:
            return out
        if self.headline in self.available:
            out += ["consistency", "layers", "umap"]
        if len(self.available) >= 2:
            out.append("metrics")
        if self._kernel_pair():
            out.append("kernel_size")
        if self.headline in self.available and self.checkpoints:
            out.append("trajectories")
        return out

    def leadlag_files(self) -> list[str]:
        """The lead-lag table of the training runs, wherever the trajectory figure is built."""
        return [f"{self.results}/stats/trajectory_leadlag.csv"] if "trajectories" in self.figure_families() else []

    def brain_map_stems(self) -> list[str]:
        """``{modality}_{kind}`` brain maps (kind: score, normalised, change) and the noise-ceiling map."""
        if not self.atlas:
            return []
        if self.mode == "paper":
            stems = [f"{m}_change" for m in MODALITIES]
        else:
            kinds = (["score"] if self.headline in self.available else []) + (
                ["normalised"] if self.roi_score_files() else []) + (["change"] if self._kernel_pair() else [])
            stems = [f"{m}_{k}" for m in self.modalities for k in kinds]
        return stems + (["noise_ceiling"] if self.noise_ceiling_files() else [])

    def figure_stem(self, family: str, stem: str) -> str:
        return f"{self.results}/figures/{family}/{stem}"

    def figure_files(self) -> list[str]:
        stems = figure_stems(self.kernel_sizes)
        out = [f"{self.figure_stem(FIGURE_DIR.get(f, f), stems[f])}.{ext}"
               for f in self.figure_families() for ext in FIGURE_EXTS]
        return out + [f"{self.figure_stem('brain_maps', s)}.{ext}" for s in self.brain_map_stems()
                      for ext in FIGURE_EXTS]

    # ------------------------------------------------------------------ results explorer
    def explorer_files(self) -> list[str]:
        """The results explorer's front page (measured and tables modes: it reads the measurement tables)."""
        if self.mode == "paper" or not self.modalities:
            return []
        return [f"{self.results}/explorer/index.html"]

    # ------------------------------------------------------------------ everything
    def all_targets(self, table_files: list[str]) -> list[str]:
        """Rule ``all``'s inputs; ``table_files``: the measurement tables the run aggregates (measured
        mode; [] in tables mode)."""
        if self.mode == "paper":
            return self.stats_files() + self.figure_files()
        return (list(table_files) + self.noise_ceiling_files() + self.split_half_files() + self.roi_score_files()
                + self.null_stats_files() + self.stats_files() + self.leadlag_files() + self.figure_files()
                + self.explorer_files())
