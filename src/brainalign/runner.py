"""Run one workflow stage from a Snakemake ``script:``: logging, and one-line errors."""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable

from brainalign.io import InputError

#: glibc malloc settings for the workflow's jobs (the Snakefile exports them unless the user set them). By
#: default glibc hands every freed block over 32 MB back to the kernel and maps a new one at the next
#: allocation, so a model's forward pass on the CPU faults in the pages of its activations again at every
#: batch: a third of a vision feature job was kernel time (9 of 27 s for tf_efficientnet_lite0 on the
#: demo, 0.9 with these). Blocks up to 64 MB come from the heap, and up to 512 MB of freed heap is kept for
#: reuse; larger arrays (the engine's blocks at the paper's size) are mapped as before.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(512 << 20)}


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
        _fail(str(exc))
    except OSError as exc:
        if not disk_full(exc):
            raise
        where = sorted({os.path.dirname(os.path.abspath(o)) for o in getattr(snakemake, "output", [])})
        _fail(f"no space left on device writing {', '.join(where) or 'the outputs'}: free space there (or run "
              "in a directory on a larger disk) and rerun; no partial output was kept")


def disk_full(exc: OSError) -> bool:
    """Whether ``exc`` says the disk or the quota is full (h5py puts errno 28 in its message only)."""
    text = str(exc)
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in text or "errno = 28" in text


def _fail(message: str) -> None:
    logging.getLogger("brainalign").error("%s", message)
    print(f"brainalign: error: {message}", file=sys.stderr)
    sys.exit(1)
