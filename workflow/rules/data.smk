# NSD: the mini-NSD generator (default target only), stimuli and ROI responses per subject.
from brainalign.pipeline import mini_nsd_outputs

if IS_DEFAULT_MINI:

    # two stages, so that the training run (it needs only the images and captions) starts while the
    # brain stage computes the planted read-outs and writes the betas
    rule mini_nsd_stimuli:
        output:
            mini_nsd_outputs(DEFAULT_MINI_NSD, "stimuli"),
        log:
            f"{RESULTS}/logs/mini_nsd_stimuli.log",
        benchmark:
            f"{RESULTS}/benchmarks/mini_nsd_stimuli.tsv"
        conda:
            "../../envs/data.yaml"
        params:
            # the release root, from nsddata/experiments/nsd/nsd_expdesign.mat (the first output)
            root=lambda w, output: str(Path(output[0]).parents[3]),
            registry=REGISTRY_FILES,
            seed=MINI["seed"],
            vision_model=MINI["vision_model"],
            language_model=MINI["language_model"],
            stage="stimuli",
            vision_input_size=None,
        script:
            "../../scripts/make_mini_nsd.py"

    rule mini_nsd:
        input:
            mini_nsd_outputs(DEFAULT_MINI_NSD, "stimuli"),
        output:
            truth=f"{DEFAULT_MINI_NSD}/ground_truth.json",
            release=mini_nsd_outputs(DEFAULT_MINI_NSD, "brain"),
        log:
            f"{RESULTS}/logs/mini_nsd.log",
        benchmark:
            f"{RESULTS}/benchmarks/mini_nsd.tsv"
        conda:
            "../../envs/data.yaml"
        params:
            root=lambda w, output: os.path.dirname(output.truth),
            registry=REGISTRY_FILES,
            seed=MINI["seed"],
            vision_model=MINI["vision_model"],
            language_model=MINI["language_model"],
            stage="brain",
            vision_input_size=VISION_INPUT_SIZE,
        script:
            "../../scripts/make_mini_nsd.py"


rule stimuli:
    input:
        # a subject's stimuli are the images of the sessions whose betas are on disk
        lambda w: [str(p) for p in LAYOUT.stimulus_inputs(w.subject)] + MINI_BRAIN_STAGE,
    output:
        f"{RESULTS}/stimuli/{{split}}/{{subject}}.csv",
    log:
        f"{RESULTS}/logs/stimuli/{{split}}/{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/stimuli/{{split}}/{{subject}}.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        nsd_root=NSD_ROOT,
        sessions=SESSIONS,
        coco_annotations=str(LAYOUT.coco_annotations),
    script:
        "../../scripts/stimuli.py"


rule noise_ceiling:
    input:
        lambda w: [str(p) for p in LAYOUT.subject_inputs(w.subject, HAS_LABEL_TABLE) + [LAYOUT.ncsnr(w.subject)]],
    output:
        f"{RESULTS}/stats/noise_ceiling/{{split}}/{{subject}}.csv",
    log:
        f"{RESULTS}/logs/noise_ceiling/{{split}}/{{subject}}.log",
    conda:
        "../../envs/data.yaml"
    params:
        nsd_root=NSD_ROOT,
        sessions=SESSIONS,
        rois=config["rois"],
    script:
        "../../scripts/noise_ceiling.py"


rule ingest:
    input:
        lambda w: [str(p) for p in LAYOUT.subject_inputs(w.subject, HAS_LABEL_TABLE)],
    output:
        f"{RESULTS}/brain/{{split}}/{{subject}}.h5",
    log:
        f"{RESULTS}/logs/ingest/{{split}}/{{subject}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{split}}/{{subject}}.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        nsd_root=NSD_ROOT,
        sessions=SESSIONS,
        rois=config["rois"],
        zscore_sessions=config["zscore_sessions"],
        brain_format=BRAIN_FORMAT,
    script:
        "../../scripts/ingest.py"
