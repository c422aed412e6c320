# The brain's side of alignment, once per subject: the ROIs' neighbour lists, CKNNA's own sums and the
# kernels' centring, row sums and self products (brainalign.alignment.summary), read by every align job of the
# subject. Changing the metrics reruns it (and the align jobs); adding a model reruns neither.
rule brain_summary:
    input:
        f"{RESULTS}/brain/{{split}}/{{subject}}.h5",
    output:
        f"{RESULTS}/brain/{{split}}/{{subject}}.summary.h5",
    log:
        f"{RESULTS}/logs/brain_summary/{{split}}/{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/brain_summary/{{split}}/{{subject}}.tsv"
    conda:
        "../../envs/align.yaml"
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        metrics=METRICS,
        device=DEVICE,
    script:
        "../../scripts/brain_summary.py"


# Alignment: one job per (subject, batch of models): every layer of the batch's models x ROI x metric,
# the ROIs' kernel blocks formed once for the batch (config key align_batch; brainalign.alignment.batches). With
# null_permutations > 0 the same job also writes the permutation nulls of the headline metric (the
# brain's stimulus order shuffled, the same shuffles for every parcel and model of a subject): the data
# are read once and no second job pays the start-up.


# (Snakemake keeps one onstart handler: it records the converge batches too, rules/convergence.smk)
onstart:
    record_align_batches()
    record_conv_batches()


rule align:
    input:
        brain=f"{RESULTS}/brain/{{split}}/{{subject}}.h5",
        summary=f"{RESULTS}/brain/{{split}}/{{subject}}.summary.h5",
        features=per_job(batch_features),
    output:
        **ALIGN_OUTPUTS,
    log:
        f"{RESULTS}/logs/align/{{split}}/{{subject}}/{{batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/align/{{split}}/{{subject}}/{{batch}}.tsv"
    wildcard_constraints:
        batch="|".join(re.escape(b) for b in BATCH_MEMBERS) or "(?!)",
    conda:
        "../../envs/align.yaml"
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        models=per_job(lambda w: list(BATCH_MEMBERS[w.batch])),
        metrics=METRICS,
        device=DEVICE,
        null_metric=ANALYSIS["metric"],
        null_permutations=NULL_PERMUTATIONS,
        seed=ANALYSIS["resamples_seed"],
        encoding=config["encoding"],
        max_gb=config["align_max_gb"],
    script:
        "../../scripts/align.py"


# Split-half ceilings: per subject and parcel, the headline metric between the two halves of each
# image's trials, and the ceiling it implies (brainalign.alignment.ceiling).
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


# Per modality, the FDR over every permutation test of the align jobs (null_permutations > 0).
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
