from brainalign.pipeline import aggregate
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: aggregate(s.input.alignment, list(s.input.registry), s.output[0]))
