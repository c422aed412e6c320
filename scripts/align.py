import torch

from brainalign.pipeline import align_job
from brainalign.runner import run

s = snakemake  # noqa: F821
torch.set_num_threads(max(1, s.threads))
run(s, lambda: align_job(s.input.brain, s.input.features, s.wildcards.model, s.wildcards.subject,
                         s.params.metrics, s.params.device, s.output[0]))
