"""Run one workflow stage from a Snakemake ``script:``: logging, and one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from brainalign.io import InputError


def run(snakemake, stage: Callable[[], None]) -> None:
    """Call ``stage()`` with logging to the rule's log file.

    The rule's ``threads`` reach the table readers (DuckDB) as ``BRAINALIGN_THREADS``.
    Bad input (:class:`InputError`) ends the job with its one-line message and
    exit status 1; outputs are written atomically, so nothing partial remains.
    """
    os.environ["BRAINALIGN_THREADS"] = str(max(1, int(getattr(snakemake, "threads", 1) or 1)))
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        stage()
    except InputError as exc:
        logging.getLogger("brainalign").error("%s", exc)
        print(f"brainalign: error: {exc}", file=sys.stderr)
        sys.exit(1)
