# Figures: each family is its own target (PNG + PDF + the CSV of the numbers behind it), drawn by
# brainalign.figure_stages; `snakemake --report` collects the PNGs with their captions.

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
    params:
        family="performance",
        benchmarks={"vision": ANALYSIS["vision_benchmark"], "language": ANALYSIS["language_benchmark"]},
        **FIGURE_PARAMS,
    log:
        f"{RESULTS}/logs/figures/performance.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/performance.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/figure.py"


rule figure_performance_sigma:
    input:
        scores=score_files(),
    output:
        **figure_outputs("performance", FIGURES["performance_sigma"], "performance_sigma"),
    params:
        family="performance_sigma",
        **FIGURE_PARAMS,
    log:
        f"{RESULTS}/logs/figures/performance_sigma.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/performance_sigma.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/figure.py"


rule figure_robustness:
    input:
        robustness=robustness_file()[0] if robustness_file() else [],
    output:
        **figure_outputs("robustness", FIGURES["robustness"], "robustness"),
    params:
        family="robustness",
        **FIGURE_PARAMS,
    log:
        f"{RESULTS}/logs/figures/robustness.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/robustness.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/figure.py"


# Families that read the measurement tables (precomputed mode: consistency and kernel size read
# the paper's own published tables instead, so they need no input).
for _family in ("consistency", "metrics", "layers", "kernel_size", "umap"):

    rule:
        name:
            f"figure_{_family}"
        input:
            unpack(measured_tables) if SCORES_FROM != "paper" else [],
        output:
            **figure_outputs(_family, FIGURES[_family], _family),
        params:
            family=_family,
            sigma_from=KERNEL_FROM,
            sigma_to=KERNEL_TO,
            seed=ANALYSIS["umap_seed"],
            **FIGURE_PARAMS,
        threads: 2
        log:
            f"{RESULTS}/logs/figures/{_family}.log",
        benchmark:
            f"{RESULTS}/benchmarks/figures/{_family}.tsv"
        conda:
            "../../envs/analysis.yaml"
        script:
            "../../scripts/figure.py"


# Brain maps: per-ROI values on fsaverage5 through NSD's HCP-MMP1 annotation (brainalign.brainmap);
# kind = the headline metric's per-ROI score, or the kernel-size change.
rule figure_brain_map:
    input:
        unpack(brain_map_inputs),
    output:
        **figure_outputs("brain_maps", "{modality}_{kind}", "brain_maps"),
    params:
        family="brain_map",
        modality="{modality}",
        kind="{kind}",
        sigma_from=KERNEL_FROM,
        sigma_to=KERNEL_TO,
        **FIGURE_PARAMS,
    threads: 2
    wildcard_constraints:
        kind=r"score|change",
    log:
        f"{RESULTS}/logs/figures/brain_map_{{modality}}_{{kind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/brain_map_{{modality}}_{{kind}}.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/figure.py"


# Training trajectories: the selected checkpoint models (vision epochs with the run's timm
# summary.csv as performance; Pythia steps with their token counts), one panel per run; in
# tables mode the models of {vision,language}_trained.parquet.
rule figure_trajectories:
    input:
        unpack(trajectory_inputs),
        summaries=[] if TABLES_FROM else sorted({c["summary"] for c in checkpoint_models() if c["summary"]}),
    output:
        **figure_outputs("trajectories", FIGURES["trajectories"], "trajectories"),
    params:
        family="trajectories",
        checkpoints=[] if TABLES_FROM else checkpoint_models(),
        registries=sorted(set(REGISTRY_FILES) | {str(p) for p in Path("config/registry").glob("*.yaml")}),
        **FIGURE_PARAMS,
    threads: 2
    log:
        f"{RESULTS}/logs/figures/trajectories.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/trajectories.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/figure.py"
