# Figures: each family is its own target (PNG + PDF + the CSV of the numbers behind it), drawn by
# brainalign.figures.stages; `snakemake --report` collects the PNGs with their captions.

FIGURE_PARAMS = {
    "metric": ANALYSIS["metric"],
    "pooling": ANALYSIS["pooling"],
    "scores_from": SCORES_FROM,
}


rule figure_performance:
    input:
        scores=score_files(),
    output:
        **figure_outputs("performance", FIGURES["performance"], "performance"),
    log:
        f"{RESULTS}/logs/figures/performance.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/performance.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        **FIGURE_PARAMS,
        family="performance",
        benchmarks={"vision": ANALYSIS["vision_benchmark"], "language": ANALYSIS["language_benchmark"]},
    script:
        "../../scripts/figure.py"


rule figure_performance_sigma:
    input:
        scores=score_files(),
    output:
        **figure_outputs("performance", FIGURES["performance_sigma"], "performance_sigma"),
    log:
        f"{RESULTS}/logs/figures/performance_sigma.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/performance_sigma.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        **FIGURE_PARAMS,
        family="performance_sigma",
    script:
        "../../scripts/figure.py"


rule figure_robustness:
    input:
        robustness=robustness_file()[0] if robustness_file() else [],
    output:
        **figure_outputs("robustness", FIGURES["robustness"], "robustness"),
    log:
        f"{RESULTS}/logs/figures/robustness.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/robustness.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        **FIGURE_PARAMS,
        family="robustness",
    script:
        "../../scripts/figure.py"


rule figure_headline_by_metric:
    input:
        table=f"{RESULTS}/stats/headline_by_metric.csv",
    output:
        **figure_outputs("metric_families", FIGURES["headline_by_metric"], "headline_by_metric"),
    log:
        f"{RESULTS}/logs/figures/headline_by_metric.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/headline_by_metric.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        **FIGURE_PARAMS,
        family="headline_by_metric",
    script:
        "../../scripts/figure.py"


# Families that read the measurement tables (precomputed mode: consistency and kernel size read
# the paper's own published tables instead, so they need no input).
for _family in ("consistency", "metrics", "layers", "kernel_size", "umap"):

    rule:
        name:
            f"figure_{_family}"
        input:
            unpack(layer_inputs if _family == "layers" else measured_tables) if SCORES_FROM != "paper" else [],
        output:
            **figure_outputs(_family, FIGURES[_family], _family),
        log:
            f"{RESULTS}/logs/figures/{_family}.log",
        benchmark:
            f"{RESULTS}/benchmarks/figures/{_family}.tsv"
        conda:
            "../../envs/analysis.yaml"
        threads: TABLE_THREADS
        params:
            **FIGURE_PARAMS,
            family=_family,
            sigma_from=KERNEL_FROM,
            sigma_to=KERNEL_TO,
            seed=ANALYSIS["umap_seed"],
            normalise_layers=ANALYSIS["normalise_layers"],
        script:
            "../../scripts/figure.py"


# Brain maps: per-ROI values on fsaverage5 through NSD's HCP-MMP1 annotation (brainalign.figures.brainmap);
# kind = the headline metric's per-ROI score, the score as a fraction of its split-half ceiling
# (normalised), or the kernel-size change.
rule figure_brain_map:
    input:
        unpack(brain_map_inputs),
    output:
        **figure_outputs("brain_maps", "{modality}_{kind}", "brain_maps"),
    log:
        f"{RESULTS}/logs/figures/brain_map_{{modality}}_{{kind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/brain_map_{{modality}}_{{kind}}.tsv"
    wildcard_constraints:
        kind=r"score|change|normalised",
    conda:
        "../../envs/analysis.yaml"
    threads: TABLE_THREADS
    params:
        **FIGURE_PARAMS,
        family="brain_map",
        modality="{modality}",
        kind="{kind}",
        sigma_from=KERNEL_FROM,
        sigma_to=KERNEL_TO,
    script:
        "../../scripts/figure.py"


# The noise-ceiling map: NSD's per-parcel ceiling (rule noise_ceiling), mean over subjects.
rule figure_ceiling_map:
    input:
        lh=str(LAYOUT.fsaverage_labels("lh")),
        rh=str(LAYOUT.fsaverage_labels("rh")),
        ctab=str(LAYOUT.parcel_table),
        ceilings=noise_ceiling_files(),
    output:
        **figure_outputs("brain_maps", "noise_ceiling", "ceiling_map"),
    log:
        f"{RESULTS}/logs/figures/ceiling_map.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/ceiling_map.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        family="ceiling_map",
    script:
        "../../scripts/figure.py"


# Training trajectories: the selected checkpoint models (vision epochs with the run's timm
# summary.csv as performance; Pythia steps with their token counts), one panel per run; in
# tables mode the models of {vision,language}_trained.parquet.
TRAJECTORY_PARAMS = {
    "checkpoints": [] if TABLES_FROM else checkpoint_models(),
    "registries": sorted(set(REGISTRY_FILES) | {str(p) for p in Path("config/registry").glob("*.yaml")}),
}


# Lead-lag of alignment and performance per training run (brainalign.analysis.leadlag).
rule trajectory_leadlag:
    input:
        unpack(trajectory_inputs),
        summaries=[] if TABLES_FROM else sorted({c["summary"] for c in checkpoint_models() if c["summary"]}),
    output:
        report(f"{RESULTS}/stats/trajectory_leadlag.csv", caption="../report/leadlag.rst", category="trajectories"),
    log:
        f"{RESULTS}/logs/stats/trajectory_leadlag.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/trajectory_leadlag.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: TABLE_THREADS
    params:
        **TRAJECTORY_PARAMS,
        **FIGURE_PARAMS,
        resamples=ANALYSIS["resamples"],
        seed=ANALYSIS["resamples_seed"],
    script:
        "../../scripts/leadlag.py"


rule figure_trajectories:
    input:
        unpack(trajectory_inputs),
        summaries=[] if TABLES_FROM else sorted({c["summary"] for c in checkpoint_models() if c["summary"]}),
        leadlag=f"{RESULTS}/stats/trajectory_leadlag.csv",
    output:
        **figure_outputs("trajectories", FIGURES["trajectories"], "trajectories"),
    log:
        f"{RESULTS}/logs/figures/trajectories.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/trajectories.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: TABLE_THREADS
    params:
        **TRAJECTORY_PARAMS,
        **FIGURE_PARAMS,
        family="trajectories",
    script:
        "../../scripts/figure.py"
