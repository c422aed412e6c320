from brainalign.analysis.tables import check_table
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: check_table(s.input[0]).to_json(s.output[0]))
