from brainalign.pipeline import split_half_ceilings
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: split_half_ceilings(s.input[0], s.params.metric, s.output[0], s.params.device, s.params.permutations,
                                   s.params.seed))
