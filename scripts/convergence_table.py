from brainalign.analysis.convergence import aggregate_convergence
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: aggregate_convergence(list(s.input), s.output[0]))
