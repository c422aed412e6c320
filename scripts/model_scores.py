from brainalign.pipeline import measured_model_scores, paper_model_scores
from brainalign.runner import run

s = snakemake  # noqa: F821
inputs = dict(s.input.items())  # `in s.input` would test the file paths, not the names
if "table" in inputs:
    run(s, lambda: measured_model_scores(inputs["table"], s.params.pooling, s.output[0], inputs["check"],
                                         s.wildcards.modality))
else:
    run(s, lambda: paper_model_scores(s.wildcards.modality, s.output[0]))
