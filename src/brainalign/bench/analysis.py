"""Benchmark of the analysis at the paper's size (``make bench-analysis``).

Writes a paper-size pair of tables with planted scores (:mod:`brainalign.bench.synthetic`: the paper's 594
vision models with 6-26 layers and 36 language models with 17-48 layers, 4 subjects, 180 ROIs, all
27 metrics, plus the checkpoint tables), runs the workflow's tables mode on them
(``snakemake --config tables_from=DIR``) from scratch, and prints per job the wall time and peak
RSS of Snakemake's ``benchmark:`` files, the whole run's wall time, and whether the headline r
equals the planted one. The tables are kept under ``--work`` and reused by the next run when the
generator's parameters are the same.

    python -m brainalign.bench.analysis [--work results/bench_analysis] [--vision 594] [--language 36]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

#: The issue's limits for the paper-size analysis on a 2-core machine.
RSS_LIMIT_GB = 3.0
WALL_LIMIT_S = 15 * 60


def ensure_tables(tables: Path, n_vision: int | None, n_language: int | None, n_rois: int) -> dict:
    """Generate the tables unless ``tables`` holds ones made with the same parameters."""
    from brainalign.bench.synthetic import write_tables

    params = {"vision": n_vision, "language": n_language, "rois": n_rois, "version": 1}
    stamp = tables / "params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"reusing the tables in {tables}")
        return params
    shutil.rmtree(tables, ignore_errors=True)
    t0 = time.perf_counter()
    write_tables(tables, n_vision, n_language, "all", 4, n_rois, seed=0)
    stamp.write_text(json.dumps(params))
    print(f"tables written to {tables} in {time.perf_counter() - t0:.0f} s")
    return params


def job_table(results: Path) -> pd.DataFrame:
    """One row per job from ``results/benchmarks/**/*.tsv``: job, wall s, peak RSS (GB)."""
    rows = []
    for f in sorted((results / "benchmarks").rglob("*.tsv")):
        b = pd.read_csv(f, sep="\t")
        rss = pd.to_numeric(b["max_rss"], errors="coerce")
        rows.append({"job": str(f.relative_to(results / "benchmarks").with_suffix("")),
                     "wall_s": float(b["s"].iloc[0]), "peak_rss_gb": float(rss.iloc[0]) / 1024})
    return pd.DataFrame(rows)


def headline_check(tables: Path, results: Path) -> list[str]:
    """The workflow's headline r against the r of the planted scores, per modality."""
    from brainalign.analysis.stats import HEADLINE, LANGUAGE_CATEGORY, VISION_CATEGORY

    lines = []
    table = pd.read_csv(results / "stats" / "correlation_sigma36_numeric.csv")
    for mod, cat in (("vision", VISION_CATEGORY), ("language", LANGUAGE_CATEGORY)):
        planted = pd.read_csv(tables / f"planted_scores_{mod}_all.csv").set_index("model")["cka_36"]
        scores = pd.read_csv(results / "stats" / f"model_scores_{mod}.csv").set_index("model")
        bench = scores[HEADLINE[cat]]
        ok = bench.notna()
        r_planted = float(np.corrcoef(planted.reindex(scores.index)[ok], bench[ok])[0, 1])
        row = table[(table["category"] == cat) & (table["metric"] == HEADLINE[cat])].iloc[0]
        lines.append(f"{mod}: headline r {row['pearson_r']:.6f} (n = {int(row['n'])}), planted {r_planted:.6f}, "
                     f"max |score - planted| "
                     f"{float((scores['cka_36'] - planted.reindex(scores.index)).abs().max()):.1e}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="results/bench_analysis", help="tables and run directory")
    p.add_argument("--vision", type=int, default=None, help="vision models (default: the paper's 594)")
    p.add_argument("--language", type=int, default=None, help="language models (default: the paper's 36)")
    p.add_argument("--rois", type=int, default=180)
    p.add_argument("--cores", type=int, default=2)
    a = p.parse_args(argv)
    work = Path(a.work)
    tables, results = work / "tables", work / "run"
    ensure_tables(tables, a.vision, a.language, a.rois)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in tables.glob("*.parquet"))
    shutil.rmtree(results, ignore_errors=True)
    snakemake = str(Path(sys.executable).parent / "snakemake")
    cmd = [snakemake, "--cores", str(a.cores), "--config", f"tables_from={tables}", f"results={results}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        print(f"the workflow failed (exit {proc.returncode})")
        return 1
    jobs = job_table(results).sort_values("wall_s", ascending=False)
    print(f"\nanalysis of {rows:,} rows ({tables}), {a.cores} cores: {len(jobs)} jobs\n")
    print(f"{'job':<44} {'wall s':>8} {'peak RSS GB':>12}")
    for r in jobs.itertuples():
        print(f"{r.job:<44} {r.wall_s:>8.1f} {r.peak_rss_gb:>12.2f}")
    peak = float(jobs["peak_rss_gb"].max())
    print(f"\nwhole run: {wall:.0f} s (limit {WALL_LIMIT_S} s); job time summed {jobs['wall_s'].sum():.0f} s; "
          f"largest peak RSS {peak:.2f} GB (limit {RSS_LIMIT_GB} GB)")
    for line in headline_check(tables, results):
        print(line)
    ok = wall <= WALL_LIMIT_S and peak <= RSS_LIMIT_GB
    print("within limits" if ok else "OVER A LIMIT")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
