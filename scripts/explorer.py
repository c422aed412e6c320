from brainalign.figures.explorer import explorer_stage
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: explorer_stage(dict(s.input.items()), s.output[0], dict(s.params.items())))
