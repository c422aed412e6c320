# Alignment: one job per (subject, model), every layer x ROI x metric.


rule align:
    input:
        brain=f"{RESULTS}/brain/{{split}}/{{subject}}.h5",
        features=f"{RESULTS}/features/{{split}}/{{subject}}/{{model}}.h5",
    output:
        f"{RESULTS}/alignment/{{split}}/{{subject}}/{{model}}.parquet",
    log:
        f"{RESULTS}/logs/align/{{split}}/{{subject}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/align/{{split}}/{{subject}}/{{model}}.tsv"
    conda:
        "../../envs/align.yaml"
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        metrics=METRICS,
        device=DEVICE,
    script:
        "../../scripts/align.py"


# Split-half ceilings: per subject and parcel, the headline metric between the two halves of each
# image's trials, and the ceiling it implies (brainalign.ceiling).
rule split_half_ceiling:
    input:
        f"{RESULTS}/brain/{{split}}/{{subject}}.h5",
    output:
        f"{RESULTS}/stats/split_half_ceiling/{{split}}/{{subject}}.csv",
    log:
        f"{RESULTS}/logs/split_half_ceiling/{{split}}/{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/split_half_ceiling/{{split}}/{{subject}}.tsv"
    conda:
        "../../envs/align.yaml"
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        metric=ANALYSIS["metric"],
        permutations=ANALYSIS["ceiling_permutations"],
        seed=ANALYSIS["resamples_seed"],
        device=DEVICE,
    script:
        "../../scripts/split_half_ceiling.py"


# Permutation nulls (config null_permutations > 0): the headline metric with the brain's stimulus
# order shuffled, per (subject, model); then per modality the FDR over every test.
rule null:
    input:
        brain=f"{RESULTS}/brain/{{split}}/{{subject}}.h5",
        features=f"{RESULTS}/features/{{split}}/{{subject}}/{{model}}.h5",
    output:
        f"{RESULTS}/nulls/{{split}}/{{subject}}/{{model}}.parquet",
    log:
        f"{RESULTS}/logs/null/{{split}}/{{subject}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/null/{{split}}/{{subject}}/{{model}}.tsv"
    conda:
        "../../envs/align.yaml"
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        metric=ANALYSIS["metric"],
        permutations=NULL_PERMUTATIONS,
        seed=ANALYSIS["resamples_seed"],
        device=DEVICE,
    script:
        "../../scripts/null.py"


rule null_stats:
    input:
        lambda w: null_files(w.modality),
    output:
        rows=f"{RESULTS}/stats/nulls_{{modality}}.parquet",
        parcels=f"{RESULTS}/stats/nulls_{{modality}}_parcels.csv",
    log:
        f"{RESULTS}/logs/stats/nulls_{{modality}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/nulls_{{modality}}.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/null_stats.py"
