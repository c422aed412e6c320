# Convergence: models aligned with models (config key convergence; brainalign.alignment.convergence). A
# converge job scores a batch of source models against a batch of partner models on one stimulus set (the
# features of convergence: subject, split), every layer pair with every convergence metric; the tables,
# statistics and figure follow as for the brain. Built by `snakemake results/figures/convergence/convergence.png`
# (or by default with convergence: default_target: true).


rule converge:
    input:
        src=lambda w: conv_features(CONV_MEMBERS[w.src_batch]),
        tgt=lambda w: conv_features(CONV_MEMBERS[w.tgt_batch]),
    output:
        f"{RESULTS}/convergence/{CONV_SPLIT}/{{kind}}/{{src_batch}}/{{tgt_batch}}.parquet",
    log:
        f"{RESULTS}/logs/converge/{CONV_SPLIT}/{{kind}}/{{src_batch}}/{{tgt_batch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/converge/{CONV_SPLIT}/{{kind}}/{{src_batch}}/{{tgt_batch}}.tsv"
    wildcard_constraints:
        kind="|".join(CONV_KINDS),
        src_batch="|".join(re.escape(b) for b in CONV_MEMBERS) or "(?!)",
        tgt_batch="|".join(re.escape(b) for b in CONV_MEMBERS) or "(?!)",
    conda:
        "../../envs/align.yaml"
    resources:
        gpu=1 if USE_GPU else 0,
    params:
        src_models=lambda w: list(CONV_MEMBERS[w.src_batch]),
        tgt_models=lambda w: list(CONV_MEMBERS[w.tgt_batch]),
        within=lambda w: w.kind.split("_")[0] == w.kind.split("_")[1],
        metrics=CONV_METRICS,
        device=DEVICE,
        encoding=config["encoding"],
    script:
        "../../scripts/converge.py"


rule convergence_table:
    input:
        lambda w: conv_job_files(w.kind),
    output:
        f"{RESULTS}/tables/convergence_{{kind}}.parquet",
    log:
        f"{RESULTS}/logs/convergence_table/{{kind}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/convergence_table/{{kind}}.tsv"
    wildcard_constraints:
        kind="|".join(CONV_KINDS),
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/convergence_table.py"


rule convergence_stats:
    input:
        tables=[conv_table(k) for k in conv_kinds()],
        scores=list(conv_score_files().values()),
    output:
        **CONV_STATS,
    log:
        f"{RESULTS}/logs/stats/convergence.log",
    benchmark:
        f"{RESULTS}/benchmarks/stats/convergence.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        kinds=conv_kinds(),
        modalities=list(conv_score_files()),
        pooling=CONV["pooling"],
        benchmarks={"vision": ANALYSIS["vision_benchmark"], "language": ANALYSIS["language_benchmark"]},
        brain_metric=ANALYSIS["metric"],
        registry=FAMILY_REGISTRIES,
        resamples=ANALYSIS["resamples"],
        seed=ANALYSIS["resamples_seed"],
    script:
        "../../scripts/convergence_stats.py"


rule figure_convergence:
    input:
        models=CONV_STATS["models"],
        pairs=CONV_STATS["pairs"],
    output:
        **figure_outputs("convergence", "convergence", "convergence"),
    log:
        f"{RESULTS}/logs/figures/convergence.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/convergence.tsv"
    conda:
        "../../envs/analysis.yaml"
    params:
        family="convergence",
        metric=CONV["metric"],
        pooling=CONV["pooling"],
    script:
        "../../scripts/figure.py"
