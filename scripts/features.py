import torch

from brainalign.pipeline import extract
from brainalign.runner import run

s = snakemake  # noqa: F821
torch.set_num_threads(max(1, s.threads))
run(s, lambda: extract(list(s.params.registry), s.wildcards.model, list(s.input.stimuli), s.input.images,
                       s.params.device, list(s.output),
                       vision_input_size=s.params.entry.get("input_size")))  # config vision_input_size
