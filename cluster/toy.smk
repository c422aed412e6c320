# Toy workflow for trying the SLURM profiles in minutes (not the project workflow): a CPU chain
# a -> b and two GPU rules named like the project's (features -> align), so their set-resources
# apply. In an empty directory, with cluster/start.sh running:
#   snakemake -s /path/to/cluster/toy.smk --profile /path/to/profiles/slurm-test
# --config sleep=N makes rule a sleep; min_mem=M makes it fail unless mem_mb >= M (retries).
rule all:
    input:
        "b.txt",
        "align.txt",


rule a:
    output:
        "a.txt",
    params:
        sleep=config.get("sleep", 0),
        # fail unless the job got at least this much memory (retries grow mem_mb with attempt)
        min_mem=config.get("min_mem", 0),
    shell:
        "test {resources.mem_mb} -ge {params.min_mem}; sleep {params.sleep}; "
        "echo job=$SLURM_JOB_ID mem_mb={resources.mem_mb} > {output}"


rule b:
    input:
        "a.txt",
    output:
        "b.txt",
    shell:
        "cat {input} > {output}; echo job=$SLURM_JOB_ID >> {output}"


rule features:
    output:
        "features.txt",
    threads: 2
    resources:
        gpu=1,
    shell:
        "echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} mem_mb={resources.mem_mb} > {output}"


rule align:
    input:
        "features.txt",
    output:
        "align.txt",
    resources:
        gpu=1,
    shell:
        "cat {input} > {output}; echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} >> {output}"
