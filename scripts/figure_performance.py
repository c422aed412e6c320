from pathlib import Path

import pandas as pd

from brainalign.figures import performance_figure
from brainalign.runner import run

s = snakemake  # noqa: F821


def stage():
    tables = {Path(f).name.split("_")[0]: pd.read_parquet(f) for f in s.input.tables}
    performance_figure(tables, s.params.benchmarks, s.params.metric, s.params.pooling,
                       s.output.png, s.output.pdf, s.output.csv)


run(s, stage)
