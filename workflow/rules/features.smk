# Model features: every layer of one model, for every subject's stimuli, from one model load.


rule features:
    input:
        stimuli=expand(f"{RESULTS}/stimuli/{{{{split}}}}/{{subject}}.csv", subject=SUBJECTS),
        images=str(LAYOUT.stimuli),
        trained=trained_weights,
    output:
        expand(f"{RESULTS}/features/{{{{split}}}}/{{subject}}/{{{{model}}}}.h5", subject=SUBJECTS),
    log:
        f"{RESULTS}/logs/features/{{split}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features/{{split}}/{{model}}.tsv"
    conda:
        "../../envs/features.yaml"
    threads: 2
    resources:
        gpu=model_gpus,
    params:
        registry=REGISTRY_FILES,
        entry=registry_entry,
        device=DEVICE,
    script:
        "../../scripts/features.py"
