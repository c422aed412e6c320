import torch

from brainalign.pipeline import align_batch_job
from brainalign.runner import run

s = snakemake  # noqa: F821
torch.set_num_threads(max(1, s.threads))
nulls = s.output.get("nulls")
run(s, lambda: align_batch_job(s.input.brain, list(s.input.features), list(s.params.models), s.wildcards.subject,
                               s.params.metrics, s.params.device, s.output.scores, nulls_out=nulls,
                               null_metric=s.params.null_metric, permutations=int(s.params.null_permutations),
                               seed=int(s.params.seed), encoding=dict(s.params.encoding),
                               summary_h5=s.input.summary, max_gb=s.params.max_gb))
