from brainalign.pipeline import convergence_stats
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: convergence_stats(dict(zip(s.params.kinds, s.input.tables, strict=True)), s.params.pooling,
                                 dict(zip(s.params.modalities, s.input.scores, strict=True)),
                                 dict(s.params.benchmarks), s.params.brain_metric, list(s.params.registry),
                                 s.output.pairs, s.output.models, s.output.correlations,
                                 n_resamples=int(s.params.resamples), seed=int(s.params.seed)))
