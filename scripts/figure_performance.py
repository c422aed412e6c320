from pathlib import Path

import pandas as pd

from brainalign.figures import performance_figure
from brainalign.runner import run

s = snakemake  # noqa: F821


def stage():
    scores = {Path(f).stem.rsplit("_", 1)[1]: pd.read_csv(f) for f in s.input.scores}
    pooling = str(next(iter(scores.values()))["pooling"].iloc[0])
    performance_figure(scores, s.params.benchmarks, s.params.metric, pooling,
                       s.output.png, s.output.pdf, s.output.csv)


run(s, stage)
