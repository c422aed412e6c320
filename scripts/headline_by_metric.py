from brainalign.pipeline import headline_by_metric_stats
from brainalign.runner import run

s = snakemake  # noqa: F821
inputs = dict(s.input.items())
scores = {mod: inputs[mod] for mod in ("vision", "language") if mod in inputs}
run(s, lambda: headline_by_metric_stats(scores, dict(s.params.benchmarks), list(s.input.registry), s.output[0],
                                        int(s.params.resamples), int(s.params.seed)))
