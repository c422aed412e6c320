# Model features: every layer of one model, for every subject's stimuli, from one model load.


rule features:
    input:
        stimuli=expand(f"{RESULTS}/stimuli/{{{{split}}}}/{{subject}}.csv", subject=SUBJECTS),
        images=str(LAYOUT.stimuli),
        trained=per_job(trained_weights),
    output:
        expand(f"{RESULTS}/features/{{{{split}}}}/{{subject}}/{{{{model}}}}.h5", subject=SUBJECTS),
    log:
        f"{RESULTS}/logs/features/{{split}}/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features/{{split}}/{{model}}.tsv"
    conda:
        "../../envs/features.yaml"
    # one CPU thread: on a CPU-only machine two 1-thread jobs extract ~20% more images per second than
    # one 2-thread job, and align jobs run beside them; profiles/slurm and profiles/local raise it
    threads: 1
    resources:
        gpu=per_job(model_gpus),
    params:
        registry=REGISTRY_FILES,
        entry=per_job(registry_entry),
        device=DEVICE,
    script:
        "../../scripts/features.py"
