import torch

from brainalign.pipeline import converge_job
from brainalign.runner import run

s = snakemake  # noqa: F821
torch.set_num_threads(max(1, s.threads))
run(s, lambda: converge_job(list(s.input.src), s.params.src_models, list(s.input.tgt), s.params.tgt_models,
                            s.params.metrics, s.params.device, s.output[0], within=bool(s.params.within),
                            encoding=dict(s.params.encoding)))
