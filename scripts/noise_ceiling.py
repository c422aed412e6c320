from brainalign.pipeline import noise_ceilings
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: noise_ceilings(s.params.nsd_root, s.wildcards.subject, s.wildcards.split, s.params.rois,
                              s.output[0], s.params.sessions))
