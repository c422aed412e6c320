"""Write measurement tables in the paper's schema with planted per-model scores.

    python tools/synthetic_tables.py DIR                  # paper size: 594 vision + 36 language models
    python tools/synthetic_tables.py DIR --vision 20 --language 6 --rois 12 --metrics cka_28,cka_36,cka_68

DIR then holds vision_all.parquet, language_all.parquet, the checkpoint tables
(vision_trained.parquet, language_trained.parquet) and planted_scores_*.csv (see brainalign.bench.synthetic).
"""

import argparse
import logging
import sys
import time

from brainalign.bench.synthetic import write_tables


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--vision", type=int, default=None, help="number of vision models (default: the paper's 594)")
    p.add_argument("--language", type=int, default=None, help="number of language models (default: the paper's 36)")
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--rois", type=int, default=180)
    p.add_argument("--metrics", default="all", help="'all' or a comma-separated list of metric names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-benchmarks", action="store_true", help="leave the benchmark columns out")
    p.add_argument("--no-trained", action="store_true", help="no checkpoint tables")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    metrics = a.metrics if a.metrics == "all" else a.metrics.split(",")
    t0 = time.perf_counter()
    planted = write_tables(a.out_dir, a.vision, a.language, metrics, a.subjects, a.rois, a.seed,
                           benchmarks=not a.no_benchmarks, trained=not a.no_trained)
    for name, df in planted.items():
        print(f"{name}: {len(df)} models, {int(df['n_layers'].sum())} layers")
    print(f"written to {a.out_dir} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
