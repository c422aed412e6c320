# Training runs the workflow performs itself (registry entries with `train: mini_nsd`): a small timm
# CNN trained on the mini-NSD images, whose per-epoch checkpoints give the training-trajectory figure.

for _run, _spec in TRAINING_RUNS.items():

    rule:
        name:
            f"train_{_run.replace('-', '_').replace('.', '_')}"
        input:
            images=str(LAYOUT.stimuli),
            stim_info=str(LAYOUT.stim_info),
            captions=[str(LAYOUT.captions("train2017")), str(LAYOUT.captions("val2017"))],
        output:
            checkpoints=[f"{_spec['dir']}/checkpoint-{e}.pth.tar" for e in sorted(_spec["epochs"])],
            summary=f"{_spec['dir']}/summary.csv",
        log:
            f"{RESULTS}/logs/training/{_run}.log",
        benchmark:
            f"{RESULTS}/benchmarks/training/{_run}.tsv"
        conda:
            "../../envs/features.yaml"
        params:
            # the release root, from nsddata/experiments/nsd/nsd_stim_info_merged.csv
            nsd_root=lambda w, input: str(Path(input.stim_info).parents[3]),
            architecture=_spec["architecture"],
            epochs=sorted(_spec["epochs"]),
            image_size=_spec["input_size"],
            seed=_spec["seed"],
        script:
            "../../scripts/train.py"
