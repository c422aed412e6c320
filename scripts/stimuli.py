from brainalign.pipeline import write_stimuli
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: write_stimuli(s.params.nsd_root, s.wildcards.subject, s.wildcards.split, s.output[0],
                             s.params.sessions, s.params.coco_annotations))
