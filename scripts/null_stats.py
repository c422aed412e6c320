from brainalign.pipeline import null_stats
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: null_stats(list(s.input), s.output.rows, s.output.parcels))
