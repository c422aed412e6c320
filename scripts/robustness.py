from brainalign.pipeline import robustness_stats
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: robustness_stats(s.input.vision, s.input.language, int(s.wildcards.sigma), list(s.input.registry),
                                s.output[0], int(s.params.resamples), int(s.params.seed)))
