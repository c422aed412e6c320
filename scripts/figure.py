from brainalign.figures.stages import FAMILIES
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: FAMILIES[s.params.family](dict(s.input.items()), dict(s.output.items()), dict(s.params.items())))
