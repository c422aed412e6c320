"""Shared fixtures: a copy of the workflow in a temporary directory, and one finished demo run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """``BRAINALIGN_NO_SKIPS=1`` (set by .ci/run): a skipped test fails, naming its reason, so CI
    cannot pass with the SLURM cluster (or anything else) silently left out."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("BRAINALIGN_NO_SKIPS") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where BRAINALIGN_NO_SKIPS=1 (CI): {reason}"


def copy_workflow(dest: Path) -> Path:
    """The workflow, config and scripts, copied so each run has its own results/."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("workflow", "config", "scripts", "envs"):
        shutil.copytree(REPO / name, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 2400) -> subprocess.CompletedProcess:
    """Run Snakemake in ``workdir``; returns the completed process (stdout + stderr merged)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env, stdout=subprocess.PIPE, check=False,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry-run as {rule: count}."""
    block = output.split("Job stats:")[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.fullmatch(r"\s*(\S+)\s+(\d+)\s*", line)
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One complete run of the default workflow (mini-NSD, 2 cores). ``BRAINALIGN_DEMO_RUN=DIR`` reuses
    a finished run in DIR (the edit loop; tests copy it before changing anything)."""
    reuse = os.environ.get("BRAINALIGN_DEMO_RUN")
    if reuse:
        work = Path(reuse)
        if not (work / "results/tables/vision_all.parquet").is_file():
            raise pytest.UsageError(f"BRAINALIGN_DEMO_RUN={reuse}: not a finished demo run (no results/tables)")
        return work
    work = copy_workflow(tmp_path_factory.mktemp("demo"))
    snakemake(work, "--cores", "2")
    return work
