from brainalign.pipeline import ingest
from brainalign.runner import run

s = snakemake  # noqa: F821
run(s, lambda: ingest(s.params.nsd_root, s.wildcards.subject, s.wildcards.split, s.params.rois,
                      s.params.zscore_sessions, s.output[0], s.params.sessions))
