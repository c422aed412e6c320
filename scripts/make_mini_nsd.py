import torch

from brainalign.pipeline import make_mini_nsd
from brainalign.runner import run

s = snakemake  # noqa: F821
torch.set_num_threads(max(1, s.threads))
p = s.params
run(s, lambda: make_mini_nsd(p.root, p.registry, p.vision_model, p.language_model, p.seed, p.stage,
                             p.vision_input_size))
