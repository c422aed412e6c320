"""``python -m brainalign.bench``: the engine benchmark (:mod:`brainalign.bench.engine`, ``make bench``)."""

from brainalign.bench.engine import main

main()
