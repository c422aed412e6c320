"""Target planning (brainalign.plan): what each mode and configuration builds, without Snakemake."""

from __future__ import annotations

import pytest

from brainalign.alignment.metrics import ALL_METRICS
from brainalign.plan import PAPER_SIGMAS, Plan

SUBJECTS = ("subj01", "subj02", "subj05", "subj07")
ALL = tuple(ALL_METRICS)


def demo(**kw) -> Plan:
    """The demo's plan (mini-NSD, both modalities, every metric, nulls, a training run)."""
    args = {"results": "results", "split": "paper", "subjects": SUBJECTS, "modalities": ("vision", "language"),
            "metrics": ALL, "null_permutations": 10, "checkpoints": True}
    return Plan(**(args | kw))


def stems(files):
    return sorted({f.rsplit(".", 1)[0].split("/figures/", 1)[1] for f in files if "/figures/" in f})


def test_the_demo_builds_every_family_map_and_statistic():
    plan = demo()
    assert plan.figure_families() == ["performance", "performance_sigma", "robustness", "headline_by_metric",
                                      "consistency", "layers", "umap", "metrics", "kernel_size", "trajectories"]
    assert plan.brain_map_stems() == [f"{m}_{k}" for m in ("vision", "language")
                                      for k in ("score", "normalised", "change")] + ["noise_ceiling"]
    targets = plan.all_targets(["results/tables/vision_all.parquet", "results/tables/language_all.parquet"])
    assert len(targets) == len(set(targets))
    assert "results/stats/correlation_sigma36.csv" in targets and "results/stats/robustness_sigma36.csv" in targets
    assert [t for t in targets if "correlation_sigma" in t] == ["results/stats/correlation_sigma36.csv"]
    assert "results/stats/nulls_language_parcels.csv" in targets
    assert "results/stats/trajectory_leadlag.csv" in targets
    assert "results/stats/headline_by_metric.csv" in targets
    assert "results/figures/metric_families/headline_by_metric.png" in targets
    assert [t for t in targets if "split_half_ceiling" in t] == [
        f"results/stats/split_half_ceiling/paper/{s}.csv" for s in SUBJECTS]
    assert len(plan.figure_files()) == 3 * (10 + 7)  # PNG, PDF and CSV of 10 families and 7 maps


def test_metrics_decide_the_families_that_need_them():
    no_kernel = demo(metrics=("cka_36", "mutual_knn_20"))
    assert "kernel_size" not in no_kernel.figure_families()
    assert not any(s.endswith("_change") for s in no_kernel.brain_map_stems())
    one = demo(metrics=("cka_36",))
    assert "metrics" not in one.figure_families() and "consistency" in one.figure_families()
    # the headline metric missing: no per-ROI scores, no score maps, no trajectories, no robustness
    other = demo(metrics=("cka_28", "cka_68"))
    fam = other.figure_families()
    assert "kernel_size" in fam and not {"consistency", "layers", "umap", "trajectories", "robustness"} & set(fam)
    # the metric-family table needs no headline metric (it is drawn for every metric measured)
    assert other.roi_score_files() == [] and other.stats_files() == ["results/stats/headline_by_metric.csv"]
    assert other.brain_map_stems() == ["vision_change", "language_change", "noise_ceiling"]


def test_a_headline_metric_that_is_not_cka_has_no_kernel_size_tables():
    plan = demo(headline="mutual_knn_20")
    assert plan.sigmas() == [] and plan.robustness_files() == []
    assert "consistency" in plan.figure_families() and "robustness" not in plan.figure_families()


def test_what_the_release_lacks_is_left_out():
    plan = demo(ncsnr=False, atlas=False, null_permutations=0, checkpoints=False)
    assert plan.noise_ceiling_files() == [] and plan.brain_map_stems() == [] and plan.null_stats_files() == []
    assert "trajectories" not in plan.figure_families() and plan.leadlag_files() == []
    assert plan.split_half_files()  # from the betas alone
    one = demo(modalities=("vision",))
    # correlations with the paper's table need both modalities; the metric-family table does not
    assert one.stats_files() == ["results/stats/headline_by_metric.csv"] and "performance" in one.figure_families()
    assert one.roi_score_files() == ["results/stats/roi_scores_vision.csv"]
    assert demo(modalities=()).figure_families() == []


def test_precomputed_mode_builds_the_papers_tables_and_figures_only():
    plan = demo(mode="paper", results="results/paper", modalities=(), metrics=(), atlas=False)
    assert plan.sigmas() == list(PAPER_SIGMAS)
    assert plan.figure_families() == ["performance", "performance_sigma", "consistency", "kernel_size", "robustness",
                                      "headline_by_metric"]
    targets = plan.all_targets(["ignored"])
    assert all(t.startswith("results/paper/") for t in targets)
    assert not [t for t in targets if "ceiling" in t or "nulls" in t or "tables/" in t or "roi_scores" in t]
    assert len([t for t in targets if "correlation_sigma" in t]) == 11
    assert demo(mode="paper", modalities=(), metrics=(), atlas=True).brain_map_stems() == ["vision_change",
                                                                                          "language_change"]


def test_tables_mode_plans_every_kernel_size_the_tables_share():
    plan = demo(mode="tables", results="results/from_tables", metrics=("cka_28", "cka_36", "cka_68", "mutual_knn_20"),
                table_metrics=("cka_28", "cka_36", "mutual_knn_20"), atlas=False)
    assert plan.sigmas() == [28, 36]
    targets = plan.all_targets([])
    assert not [t for t in targets if "ceiling" in t or "nulls" in t or "roi_scores" in t]
    assert "trajectories" in plan.figure_families()  # a *_trained table
    # the kernel-size figure needs cka_68, which the tables lack (the config's metrics do not count here)
    assert stems(targets)[:2] == ["consistency/subject_consistency", "layers/layerwise_profiles"]
    assert "kernel_size" not in plan.figure_families()


def test_tables_holding_only_some_families_plan_the_metric_family_table():
    plan = demo(mode="tables", results="results/from_tables", metrics=("cka_36", "ridge", "rsa_pearson"),
                table_metrics=("ridge", "rsa_pearson"), atlas=False, checkpoints=False)
    assert plan.sigmas() == [] and plan.robustness_files() == []
    assert plan.stats_files() == ["results/from_tables/stats/headline_by_metric.csv"]
    assert "headline_by_metric" in plan.figure_families()


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode 'fmri'"):
        demo(mode="fmri")
