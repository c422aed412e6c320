from brainalign.figures.stages import roi_score_table
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: roi_score_table(dict(s.input.items()), s.output[0], dict(s.params.items())))
