"""Benchmarks (``make bench``, ``bench-analysis``, ``bench-scale``) and their synthetic data.

``brainalign.bench`` was one module before the package was laid out by stage: its names
are re-exported here from :mod:`brainalign.bench.engine`, so existing imports keep working."""

from brainalign.bench.engine import *  # noqa: F401,F403
