"""The workflow on a small NSD-layout release (200 stimuli a subject, 2 subjects, 3 models): the whole run, a
run killed and resumed three times, and the align jobs at another thread count. The release and its
uninterrupted run are built once for the module (its tests run on one xdist worker, beside the demo)."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, copy_workflow, job_counts, snakemake
from test_workflow import plain

# early: the module's chain (the release, its whole run, then three tests on it) is the longest but the demo's
pytestmark = [pytest.mark.workflow, pytest.mark.early]

#: the release's size, and the subjects and models of its runs (3 cheap models of the default registry, given on
#: the command line: with the default 10 models a run costs a demo's worth of CPU)
STIMULI = 200
SUBJECTS = ["subj01", "subj02"]
SMALL = [f"subjects=[{','.join(SUBJECTS)}]", "vision_models=[user_cnn,tf_efficientnet_lite0.untrained]",
         "language_models=[all-MiniLM-L6-v2.untrained]"]
TABLES = ["results/tables/vision_all.parquet", "results/tables/language_all.parquet"]
TABLE_KEY = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature"]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A generated NSD-layout release of 200 stimuli a subject (each subject's ``paper`` split), 2 subjects."""
    from brainalign.pipeline import make_mini_nsd

    nsd = tmp_path_factory.mktemp("release") / "nsd"
    make_mini_nsd(nsd, REPO / "config/models.yaml", "tf_efficientnet_lite0", "all-MiniLM-L6-v2",
                  vision_input_size=128, stimuli_per_subject=STIMULI, subjects=SUBJECTS)
    return nsd


@pytest.fixture(scope="module")
def whole_run(release, tmp_path_factory) -> dict:
    """The README's ``snakemake --cores 2 --config nsd_root=DIR`` on the release, uninterrupted, through
    ``rule all``: {"work": the directory, "stdout": Snakemake's output}."""
    work = copy_workflow(tmp_path_factory.mktemp("whole") / "w")
    proc = snakemake(work, "--cores", "2", "--config", f"nsd_root={release}", *SMALL)
    return {"work": work, "stdout": proc.stdout, "release": release}


def sorted_table(path: Path) -> pd.DataFrame:
    return plain(pd.read_parquet(path)).sort_values(TABLE_KEY).reset_index(drop=True)


def test_the_whole_workflow_runs_on_a_release_of_200_stimuli_a_subject(release, whole_run):
    """The whole run (tables, statistics, figures, explorer) completes on the release: the default metrics
    leave out every k >= 200 variant with one warning line at start-up that names them and the stimulus
    count. A variant named explicitly fails at start-up, naming it."""
    from brainalign.alignment.metrics import fit_metrics

    work, stdout = whole_run["work"], whole_run["stdout"]
    warnings = [line for line in stdout.splitlines() if "left out: their k is not below" in line]
    kept, dropped = fit_metrics(yaml.safe_load((REPO / "config/config.yaml").read_text())["metrics"], STIMULI)
    assert dropped == ["mutual_knn_200", "mutual_knn_400", "cycle_knn_200", "cycle_knn_400"]
    assert len(warnings) == 1 and all(m in warnings[0] for m in dropped) and "200 stimuli of subj01" in warnings[0]
    counts = job_counts(stdout)
    assert (counts["features"], counts["align"], counts["explorer"]) == (3, 4, 1), counts
    for modality in ("vision", "language"):
        got = set(pd.read_parquet(work / f"results/tables/{modality}_all.parquet", columns=["metric"])["metric"])
        assert set(kept) <= got and not set(dropped) & got, (modality, sorted(got))
    assert (work / "results/explorer/index.html").is_file()
    assert (work / "results/figures/performance/brain_score_vs_benchmark.png").is_file()
    small = ["--config", f"nsd_root={release}", *SMALL]
    proc = snakemake(work, "-n", *small[:-1], "metrics=[cka_36,mutual_knn_200]", check=False)
    assert proc.returncode != 0 and "mutual_knn_200 needs more than 200 stimuli; subj01 (split paper) has 200" in \
        proc.stdout


KILL_TARGETS = [*TABLES, "results/stats/correlation_sigma36.csv"]
KILLS = 3


def finished_outputs(results) -> dict:
    """{output file: mtime} of every finished-looking output (no logs, no temporary files)."""
    parts = ("stimuli", "brain", "features", "alignment", "tables", "stats")
    return {p: p.stat().st_mtime_ns for part in parts for p in (results / part).rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def incomplete_jobs(work: Path) -> set[str]:
    """The jobs Snakemake had started and not yet recorded as finished (its ``.snakemake/incomplete/``
    markers: one per output, named by the output path in urlsafe base64, split into chunks)."""
    root = work / ".snakemake" / "incomplete"
    out = set()
    for marker in root.rglob("*") if root.exists() else []:
        if marker.is_file() and marker.name != "migration_underway":
            chunks = [c.lstrip("@") for c in marker.relative_to(root).parts]
            out.add(producing_job(Path(base64.urlsafe_b64decode("".join(chunks)).decode())))
    return out


def producing_job(path) -> str:
    """The job that writes ``path``: a features job writes one file per subject."""
    return f"features:{path.stem}" if "features" in path.parts else str(path)


def test_sigkill_at_three_seeded_moments_then_rerun_gives_the_uninterrupted_tables(release, whole_run, tmp_path):
    """From scratch on the release, Snakemake and its jobs are SIGKILLed at 3 seeded moments (after a seeded
    number of outputs: the same on any machine's speed); each time the README's recovery command is run.
    Nothing finished is redone (but the jobs in flight, which Snakemake had started and not recorded as
    finished: their outputs may have landed), no temporary file survives, and the final tables equal the
    uninterrupted run's."""
    work = copy_workflow(tmp_path / "w")
    results = work / "results"
    config = ["--config", f"nsd_root={release}", *SMALL]
    args = ["--cores", "2", *config, "--", *KILL_TARGETS]
    rng = np.random.default_rng(20261202)
    kills = []
    for k in range(KILLS):
        if k:  # the README's line after a crash: unlock, then rerun the incomplete jobs
            snakemake(work, "--unlock", *config)
        cmd = [SNAKEMAKE, *args[:2], *(["--rerun-incomplete"] if k else []), *args[2:]]
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        # the moment: after a seeded number of outputs more have landed, then a seeded fraction of a second
        # into the next jobs (progress, not wall time: the same moments on a fast, slow or busy machine)
        need, extra = len(finished_outputs(results)) + int(rng.integers(2, 5)), rng.uniform(0.0, 1.5)
        deadline = time.monotonic() + 900
        while proc.poll() is None and len(finished_outputs(results)) < need and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(extra)
        if proc.poll() is not None:
            break  # finished before this moment came
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: Snakemake and its jobs, no clean-up
        proc.wait()
        kills.append((finished_outputs(results), incomplete_jobs(work)))
    assert len(kills) == KILLS, f"the run finished after {len(kills)} kills; kill earlier"

    snakemake(work, "--unlock", *config)
    snakemake(work, *args[:2], "--rerun-incomplete", *args[2:])
    for before, in_flight in kills:
        # only jobs in flight at the kill are redone: those Snakemake had started and not recorded as finished
        # (the running ones, whose outputs may have landed, and those a kill before left unfinished)
        redone = {producing_job(p.relative_to(work)) for p, mtime in before.items()
                  if not p.exists() or p.stat().st_mtime_ns != mtime}
        assert redone <= in_flight, (redone, in_flight)
    # the kills fell after some jobs had finished and been recorded
    last, in_flight = kills[-1]
    assert len({producing_job(p.relative_to(work)) for p in last} - in_flight) >= 4
    assert not [p for p in results.rglob(".*.tmp")], "a killed job's temporary file survived the rerun"
    # the same models in the same align batches as the uninterrupted run: the same rows, to the last bits the
    # engine's float32 kernel blocks leave (tests/test_summary.py)
    for table in TABLES:
        got, want = sorted_table(work / table), sorted_table(whole_run["work"] / table)
        assert len(got) == len(want) > 0
        pd.testing.assert_frame_equal(got, want, rtol=0, atol=1e-9)


def test_align_jobs_at_two_threads_give_the_one_thread_tables(release, whole_run, tmp_path):
    """The align jobs (1 torch thread by default) rerun with 2 (``--set-threads align=2``: other reduction
    orders) reproduce the run's tables: the neighbour metrics exactly (their tie rule), the others to the
    engine's float32 tolerance (the kernel blocks' sums round differently: CKA moves by ~1e-6 here)."""
    work = tmp_path / "work"
    shutil.copytree(whole_run["work"], work, symlinks=True)  # keeps mtimes and .snakemake's records
    redo = SUBJECTS[0]  # its two align jobs (one batch per modality)
    for f in (work / "results/alignment/paper" / redo).glob("*.parquet"):
        f.unlink()
    for t in TABLES:
        (work / t).unlink()
    proc = snakemake(work, "--cores", "2", "--set-threads", "align=2", "--config", f"nsd_root={release}", *SMALL,
                     "--", *TABLES)
    counts = job_counts(proc.stdout)
    assert counts["align"] == 2 and counts["aggregate"] == 2 and "features" not in counts, counts
    for was, log in ((whole_run["work"], "1 torch threads"), (work, "2 torch threads")):
        logs = list((was / "results/logs/align/paper" / redo).glob("*.log"))
        assert len(logs) == 2 and all(log in p.read_text() for p in logs), was
    for t in TABLES:
        got, want = sorted_table(work / t), sorted_table(whole_run["work"] / t)
        pd.testing.assert_frame_equal(got, want, rtol=0, atol=5e-6)
        knn = want["metric"].str.startswith(("mutual_knn", "cycle_knn"))
        assert knn.sum() > 0 and got.loc[knn, "score"].equals(want.loc[knn, "score"]), t


def test_shared1000_features_are_extracted_once_and_copied_for_every_subject(whole_run, tmp_path):
    """The shared1000 split (convergence's default stimulus set) is the same images for every subject: a
    features job extracts them once per model and copies them for the other subjects."""
    import h5py

    work = tmp_path / "work"
    shutil.copytree(whole_run["work"], work, symlinks=True)
    release = whole_run["release"]
    targets = [f"results/features/shared1000/{s}/user_cnn.h5" for s in SUBJECTS]
    proc = snakemake(work, "--cores", "2", "--config", f"nsd_root={release}", *SMALL, "--", *targets)
    assert job_counts(proc.stdout) == {"stimuli": 2, "features": 1, "total": 3}
    log = (work / "results/logs/features/shared1000/user_cnn.log").read_text()
    assert log.count("(copied)") == len(SUBJECTS) - 1, log
    with h5py.File(work / targets[0]) as a, h5py.File(work / targets[1]) as b:
        np.testing.assert_array_equal(a["stimulus_ids"][()], b["stimulus_ids"][()])
        assert sorted(a["layers"]) == sorted(b["layers"]) and len(a["layers"]) == 4  # small_cnn's blocks
        for name in a["layers"]:
            np.testing.assert_array_equal(a["layers"][name][()], b["layers"][name][()], err_msg=name)


def test_adding_a_model_builds_its_features_and_align_jobs_only(whole_run, tmp_path):
    """A model added to a finished run: its features and its align jobs (a batch of its own on each subject),
    then the tables and what reads them; no brain summary, no other model's features or align job. Then it
    really runs: the other models' alignment files keep their bytes and mtimes, the new model's rows join the
    table."""
    work = tmp_path / "work"
    shutil.copytree(whole_run["work"], work, symlinks=True)  # keeps mtimes and .snakemake's records
    registry = work / "config" / "models.yaml"
    registry.write_text(registry.read_text() + "\nuser_cnn.seed7:\n  modality: vision\n  source: python\n"
                        "  architecture: config/user_models.py:small_cnn\n  weights: random\n  seed: 7\n")
    config = ["--config", f"nsd_root={whole_run['release']}", *SMALL]
    config[3] = config[3].replace("[user_cnn,", "[user_cnn.seed7,user_cnn,")
    assert "user_cnn.seed7" in config[3]
    proc = snakemake(work, "-n", "--cores", "2", *config)
    counts = job_counts(proc.stdout)
    assert (counts["features"], counts["align"]) == (1, len(SUBJECTS)), counts
    assert "brain_summary" not in counts and "ingest" not in counts and "user_cnn.seed7" in proc.stdout
    before = {p: p.stat().st_mtime_ns for p in (work / "results/alignment").rglob("*.parquet")}
    snakemake(work, "--cores", "2", *config, "--", "results/tables/vision_all.parquet")
    after = {p: p.stat().st_mtime_ns for p in (work / "results/alignment").rglob("*.parquet")}
    assert {p: after[p] for p in before} == before
    assert sorted(p.parent.name for p in set(after) - set(before)) == SUBJECTS
    table = pd.read_parquet(work / "results/tables/vision_all.parquet", columns=["src_model"])
    assert "user_cnn.seed7" in set(table["src_model"])
