import torch

from brainalign.pipeline import brain_summary_job
from brainalign.runner import run

s = snakemake  # noqa: F821
torch.set_num_threads(max(1, s.threads))
run(s, lambda: brain_summary_job(s.input[0], s.output[0], s.params.metrics, s.params.device))
