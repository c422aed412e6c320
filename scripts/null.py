import torch

from brainalign.pipeline import null_job
from brainalign.runner import run

s = snakemake  # noqa: F821
torch.set_num_threads(max(1, s.threads))
run(s, lambda: null_job(s.input.brain, s.input.features, s.wildcards.model, s.wildcards.subject, s.params.metric,
                        int(s.params.permutations), int(s.params.seed), s.params.device, s.output[0]))
