"""File writing and reading shared by every stage.

Every output is written atomically: to a temporary file in the destination
directory, then renamed over the destination. A killed job therefore never
leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd


class InputError(Exception):
    """Bad user input (a missing file, a wrong setting): the message says what to fix."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else ".tmp"
    # a job killed while writing (SIGKILL, node lost) leaves its temporary file behind; the job
    # that writes ``path`` again owns it (Snakemake runs one job per output at a time)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(suffix)}"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600; a finished output gets the usual umask mode
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` to ``path`` as parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: pd.DataFrame, path: str | os.PathLike, **kwargs) -> None:
    """Write ``df`` to ``path`` as CSV, atomically."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def require_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Return ``path`` if it is a file, else raise a one-line :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path} ({fix})")
    return path


class H5Loader:
    """A zero-argument callable that reads dataset ``key`` of an HDF5 file (as ``dtype`` if given),
    opening the file only when called: a job can hold one array of a file at a time. ``shape`` reads
    the dataset's shape alone (the engine plans its memory from it before loading anything)."""

    def __init__(self, path: str | os.PathLike, key: str, dtype=None):
        self.path, self.key, self.dtype = path, key, dtype

    def __call__(self):
        import h5py

        with h5py.File(self.path, "r") as f:
            data = f[self.key][()]
        return data if self.dtype is None else data.astype(self.dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        import h5py

        with h5py.File(self.path, "r") as f:
            return tuple(f[self.key].shape)


def h5_loader(path: str | os.PathLike, key: str, dtype=None) -> H5Loader:
    """See :class:`H5Loader`."""
    return H5Loader(path, key, dtype)


_TRIM = None


def proc_bytes(field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of this process, in bytes, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} (not Linux?)")


def release_memory() -> None:
    """Return freed memory to the OS, so that peak RSS follows what a job holds: glibc's heap
    (``malloc_trim``) and pyarrow's memory pool.

    glibc raises its mmap threshold as large blocks are freed; megabyte-sized temporaries then
    land on the heap between long-lived arrays and stay resident after they are freed (at paper
    size the alignment engine kept 5 GB that way); pyarrow's allocator keeps freed pages for reuse
    (a streaming aggregate reached 1 GB instead of 0.25 GB). Called after each large transient.
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
class Progress:
    """One log line with count, percentage, elapsed time and ETA at most every ``seconds``:
    ``Progress(n, "features vit_b16", "images")``, then ``step(k)`` after each k items."""

    def __init__(self, total: int, what: str, unit: str, seconds: float = 30.0):
        import logging
        import time

        self.total, self.done, self.what, self.unit, self.seconds = total, 0, what, unit, seconds
        self._clock, self._log = time.perf_counter, logging.getLogger("brainalign")
        self.t0 = self.last = self._clock()

    def step(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self.last >= self.seconds and self.done < self.total:
            self.last = now
            eta = (now - self.t0) / self.done * (self.total - self.done)
            self._log.info("%s: %d/%d %s (%.0f%%), %.0f s elapsed, ETA %.0f s", self.what, self.done, self.total,
                           self.unit, 100 * self.done / self.total, now - self.t0, eta)
