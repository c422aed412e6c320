from brainalign.figures.stages import leadlag_table
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: leadlag_table(dict(s.input.items()), s.output[0], dict(s.params.items())))
