# Tables: one per modality with the paper's columns and the benchmark columns.


rule aggregate:
    input:
        alignment=lambda w: alignment_files(w.modality),
        registry=REGISTRY_FILES,
    output:
        f"{RESULTS}/tables/{{modality}}_all.parquet",
    log:
        f"{RESULTS}/logs/aggregate/{{modality}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate/{{modality}}.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/aggregate.py"


# Every table is checked once, out of core, before anything reads it (a bad table fails here with
# one line naming the file and the column); the report holds the table's dimensions.
rule check_table:
    input:
        lambda w: table_path(w.modality, w.kind),
    output:
        f"{RESULTS}/checks/{{modality}}_{{kind}}.json",
    log:
        f"{RESULTS}/logs/check_table/{{modality}}_{{kind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/check_table/{{modality}}_{{kind}}.tsv"
    wildcard_constraints:
        kind=r"all|trained",
    conda:
        "../../envs/analysis.yaml"
    threads: TABLE_THREADS
    script:
        "../../scripts/check_table.py"


# One score per model (every cka_* kernel size) with its benchmarks: measured from the tables,
# or the paper's own published scores in precomputed mode (config/paper.yaml).
if SCORES_FROM == "paper":

    rule model_scores:
        output:
            f"{RESULTS}/stats/model_scores_{{modality}}.csv",
        log:
            f"{RESULTS}/logs/model_scores/{{modality}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/model_scores/{{modality}}.tsv"
        conda:
            "../../envs/analysis.yaml"
        script:
            "../../scripts/model_scores.py"

else:

    rule model_scores:
        input:
            table=lambda w: table_path(w.modality),
            check=lambda w: check_path(w.modality),
        output:
            f"{RESULTS}/stats/model_scores_{{modality}}.csv",
        log:
            f"{RESULTS}/logs/model_scores/{{modality}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/model_scores/{{modality}}.tsv"
        conda:
            "../../envs/analysis.yaml"
        threads: TABLE_THREADS
        params:
            pooling=ANALYSIS["pooling"],
        script:
            "../../scripts/model_scores.py"


rule correlation_stats:
    input:
        vision=f"{RESULTS}/stats/model_scores_vision.csv",
        language=f"{RESULTS}/stats/model_scores_language.csv",
    output:
        table=f"{RESULTS}/stats/correlation_sigma{{sigma}}.csv",
        numeric=f"{RESULTS}/stats/correlation_sigma{{sigma}}_numeric.csv",
    log:
        f"{RESULTS}/logs/stats/correlation_sigma{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/correlation_sigma{{sigma}}.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/correlation_stats.py"


rule robustness:
    input:
        vision=f"{RESULTS}/stats/model_scores_vision.csv",
        language=f"{RESULTS}/stats/model_scores_language.csv",
        registry=FAMILY_REGISTRIES,
    output:
        f"{RESULTS}/stats/robustness_sigma{{sigma}}.csv",
    log:
        f"{RESULTS}/logs/stats/robustness_sigma{{sigma}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/robustness_sigma{{sigma}}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        resamples=ANALYSIS["resamples"],
        seed=ANALYSIS["resamples_seed"],
    script:
        "../../scripts/robustness.py"


# Does the headline survive the metric? Per modality and metric variant, the pooled brain score
# against the headline benchmark with the robustness columns (brainalign.analysis.robustness.headline_by_metric).
rule headline_by_metric:
    input:
        **{mod: f"{RESULTS}/stats/model_scores_{mod}.csv" for mod in score_modalities()},
        registry=FAMILY_REGISTRIES,
    output:
        f"{RESULTS}/stats/headline_by_metric.csv",
    log:
        f"{RESULTS}/logs/stats/headline_by_metric.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/headline_by_metric.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        benchmarks={"vision": ANALYSIS["vision_benchmark"], "language": ANALYSIS["language_benchmark"]},
        resamples=ANALYSIS["resamples"],
        seed=ANALYSIS["resamples_seed"],
    script:
        "../../scripts/headline_by_metric.py"


# Per-ROI scores of the headline metric with their split-half ceilings and the ceiling-normalised
# score (measured runs).
rule roi_scores:
    input:
        unpack(roi_score_inputs),
    output:
        f"{RESULTS}/stats/roi_scores_{{modality}}.csv",
    log:
        f"{RESULTS}/logs/stats/roi_scores_{{modality}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/roi_scores_{{modality}}.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        metric=ANALYSIS["metric"],
    script:
        "../../scripts/roi_scores.py"
