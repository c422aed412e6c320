from pathlib import Path

from brainalign.models.training import train_checkpoints
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: train_checkpoints(Path(s.params.nsd_root), Path(s.output.summary).parent, s.params.architecture,
                                 list(s.params.epochs), s.params.image_size, s.params.seed))
