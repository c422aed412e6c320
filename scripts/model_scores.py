from brainalign.pipeline import measured_model_scores, paper_model_scores
from brainalign.runner import run

s = snakemake  # noqa: F821
if "table" in s.input:
    run(s, lambda: measured_model_scores(s.input.table, s.params.pooling, s.output[0]))
else:
    run(s, lambda: paper_model_scores(s.wildcards.modality, s.output[0]))
