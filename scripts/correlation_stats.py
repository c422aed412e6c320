from brainalign.pipeline import correlation_stats
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: correlation_stats(s.input.vision, s.input.language, int(s.wildcards.sigma),
                                 s.output.table, s.output.numeric))
