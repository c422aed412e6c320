# Tables: one per modality with the paper's columns and the benchmark columns.


rule aggregate:
    input:
        alignment=lambda w: alignment_files(w.modality),
        registry=REGISTRY_FILE,
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
