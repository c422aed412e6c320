from brainalign.runner import run
from brainalign.tables import check_table

s = snakemake  # noqa: F821
run(s, lambda: check_table(s.input[0]).to_json(s.output[0]))
