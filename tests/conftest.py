"""Shared fixtures: a copy of the workflow in a temporary directory, and one finished demo run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
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


def _xdist_group(item) -> str | None:
    """The group a test runs in under ``pytest -n`` (``make test``: two workers, ``--dist loadgroup``).

    The SLURM tests share one cluster per module; tests that share a module-scoped fixture stay together
    too, so that fixture (e.g. a precomputed-mode run) is built once, not once per worker; a module's
    tests that need the demo form a group of their own, so the worker that runs the module's other tests
    is not held until the demo has finished. The demo's tests are not grouped otherwise: the demo is built
    once for every worker (:func:`demo_run`) and read only."""
    if item.get_closest_marker("slurm"):
        return "slurm"
    info = getattr(item, "_fixtureinfo", None)
    for name in item.fixturenames:
        defs = info.name2fixturedefs.get(name) if info else None
        if defs and defs[-1].scope == "module":
            demo = "demo_run" in item.fixturenames or "demo_stage" in item.fixturenames
            return item.module.__name__ + (".demo" if demo else "")
    return None


def _shared_dir(config) -> Path:
    """A directory every process of this pytest run shares (xdist workers' base temps are its children)."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The order of the tests (a stable sort: each module keeps its order; see ``rank``), and the demo started
    in the background when the selected tests (after ``-k``/``-m``) hold one, so it builds while the
    other tests run."""
    groups = {item: _xdist_group(item) for item in items}
    for item, group in groups.items():
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
            if config.getoption("loadgroup", default=False) and hasattr(item, "_id"):
                # pytest 9.2's node ids live in ``_id``, where pytest-xdist 3.8's ``_nodeid`` suffix no longer
                # reaches: carry the group in the id as xdist's own hook would (``<nodeid>@<group>``)
                from _pytest.nodes import NodeId

                item._id = NodeId.parse(f"{item.nodeid}@{group}")
    # the order the workers take the tests in (``make test`` passes --no-loadscope-reorder, so xdist keeps it
    # instead of sending the largest groups first): the long chains marked ``early`` first, then the tests that
    # start from the demo's first outputs (demo_stage: the demo through SLURM), so they run beside the demo, and
    # the tests of the finished demo last; a group goes with its earliest test (a group with a test of the
    # finished demo: last)
    def rank(item) -> int:
        return (2 if "demo_run" in item.fixturenames else -2 if item.get_closest_marker("early")
                else -1 if "demo_stage" in item.fixturenames else 0)

    members: dict[str, list[int]] = {}
    for item, group in groups.items():
        if group:
            members.setdefault(group, []).append(rank(item))
    group_rank = {group: 2 if 2 in ranks else min(ranks) for group, ranks in members.items()}
    items.sort(key=lambda item: group_rank[groups[item]] if groups[item] else rank(item))
    if (any({"demo_run", "demo_stage"} & set(item.fixturenames) for item in items)
            and not os.environ.get("BRAINALIGN_DEMO_RUN")
            and not config.option.collectonly):
        _start_demo(_shared_dir(config), config)
        # the demo is the suite's critical path (its tests wait for it): this test process, and what its tests
        # start, yield the CPU to it (the demo, already started, keeps the default priority)
        os.nice(DEMO_PRIORITY)


_DEMO_PROC: list = []
#: the niceness the test processes take once the demo runs beside them
DEMO_PRIORITY = 5


def _start_demo(shared: Path, config) -> None:
    """Start the demo run (``snakemake --cores 2`` on a copy of the workflow) in ``shared/demo`` unless a
    process of this pytest run already did; ``shared/demo.rc`` holds its exit status when it ends."""
    import fcntl

    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / "demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (shared / "demo").exists():
            return
        work = copy_workflow(shared / "demo")
    cmd = (f"{SNAKEMAKE} --cores 2 > {shared / 'demo.log'} 2>&1; echo $? > {shared / 'demo.rc.tmp'} && "
           f"mv {shared / 'demo.rc.tmp'} {shared / 'demo.rc'}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    _DEMO_PROC.append(subprocess.Popen(["bash", "-c", cmd], cwd=work, env=env, start_new_session=True))


def pytest_unconfigure(config):
    """The process that started the demo waits for it (another worker may still need it), unless the
    run was interrupted."""
    for proc in _DEMO_PROC:
        try:
            proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            raise


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


def _wait_demo(config, part: str | None = None) -> Path:
    """The demo's directory once ``results/<part>`` exists in it (its outputs land atomically, so a file
    that exists is finished) or, with ``part`` None, once the whole run has ended; fails if the run
    failed first. ``BRAINALIGN_DEMO_RUN=DIR`` reuses a finished run in DIR (the edit loop)."""
    reuse = os.environ.get("BRAINALIGN_DEMO_RUN")
    if reuse:
        work = Path(reuse)
        if not (work / "results/tables/vision_all.parquet").is_file():
            raise pytest.UsageError(f"BRAINALIGN_DEMO_RUN={reuse}: not a finished demo run (no results/tables)")
        return work
    shared = _shared_dir(config)
    if not (shared / "demo").exists():  # a test selected after collection (e.g. by a plugin): start it now
        _start_demo(shared, config)
    deadline = time.monotonic() + 2400
    while not (shared / "demo.rc").exists():
        if part is not None and (shared / "demo" / "results" / part).exists():
            return shared / "demo"
        if time.monotonic() > deadline:
            raise AssertionError(f"the demo run did not finish in 40 min: {shared / 'demo.log'}")
        time.sleep(1)
    rc = (shared / "demo.rc").read_text().strip()
    if rc != "0":
        log = (shared / "demo.log").read_text()
        raise AssertionError(f"the demo run failed (exit {rc}):\n{log[-4000:]}")
    return shared / "demo"


@pytest.fixture(scope="session")
def demo_run(request) -> Path:
    """One complete run of the default workflow (mini-NSD, 2 cores), shared by every test and every xdist
    worker and read only (a test that changes it works on a copy). It is started in the background at
    collection (:func:`pytest_collection_modifyitems`); this waits for it. ``BRAINALIGN_DEMO_RUN=DIR``
    reuses a finished run in DIR (the edit loop)."""
    return _wait_demo(request.config)


@pytest.fixture(scope="session")
def demo_stage(request):
    """``demo_stage(*parts)``: the demo's directory once each ``results/<part>`` has landed, while the rest
    of the run goes on (``demo_stage()``: once it has ended, as :func:`demo_run`). A test that starts from
    the demo's first outputs (the mini-NSD, a model's features) runs beside the demo instead of after it;
    it reads only the parts it waited for (copies ignore temporary dot-files)."""

    def wait(*parts: str) -> Path:
        work = _wait_demo(request.config, None) if not parts else None
        for part in parts:
            work = _wait_demo(request.config, part)
        return work

    return wait
