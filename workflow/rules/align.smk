# Alignment: one job per (subject, model), every layer x ROI x metric.


rule align:
    input:
        brain=f"{RESULTS}/brain/{{split}}/{{subject}}.h5",
        features=f"{RESULTS}/features/{{split}}/{{subject}}/{{model}}.h5",
    output:
        f"{RESULTS}/alignment/{{split}}/{{subject}}/{{model}}.parquet",
    params:
        metrics=METRICS,
        device=DEVICE,
    resources:
        gpu=1 if USE_GPU else 0,
    log:
        f"{RESULTS}/logs/align/{{split}}/{{subject}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/align/{{split}}/{{subject}}/{{model}}.tsv"
    conda:
        "../../envs/align.yaml"
    script:
        "../../scripts/align.py"
