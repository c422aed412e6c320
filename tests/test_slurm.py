"""SLURM: profiles/slurm without a cluster (dry-run), and the profiles on a real one-node cluster.

The cluster tests start cluster/start.sh (root; installs slurm-wlm/munge/mariadb with apt-get if
missing, ~20 s cold, ~3 s warm) and run the toy workflow cluster/toy.smk through
profiles/slurm-test. Every subprocess has a hard timeout (SIGKILL on expiry). Skipped when not
root or BRAINALIGN_SKIP_SLURM=1. Leaves the cluster running when it was running before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SNAKEMAKE, copy_workflow, job_counts
from test_workflow import EXPECTED_JOBS

SLURM_COMMANDS = {"sbatch", "srun", "salloc", "sinfo", "squeue", "sacct", "sacctmgr", "scontrol", "scancel",
                  "sshare", "sstat", "sprio", "sreport", "sdiag", "sattach", "sbcast", "strigger", "scrontab"}


def run(cmd, *, env=None, cwd=None, timeout=120):
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, check=False,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def path_without_slurm(tmp_path: Path) -> str:
    """A PATH of symlinks to every command on PATH except SLURM's client commands."""
    bindir = tmp_path / "noslurm-bin"
    bindir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name not in SLURM_COMMANDS and not (bindir / name).exists():
                (bindir / name).symlink_to(os.path.join(d, name))
    return f"{Path(SNAKEMAKE).parent}{os.pathsep}{bindir}"


def test_slurm_profile_dry_run_needs_no_cluster(tmp_path):
    work = copy_workflow(tmp_path / "wf")
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = path_without_slurm(tmp_path)
    proc = run([SNAKEMAKE, "-n", "--profile", REPO / "profiles/slurm"], env=env, cwd=work, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert job_counts(proc.stdout) == EXPECTED_JOBS
    assert "gpu=1" in proc.stdout  # the profile's device=cuda makes features/align request a GPU
    assert not (work / "results").exists()


@pytest.fixture(scope="module")
def slurm_env():
    if os.environ.get("BRAINALIGN_SKIP_SLURM") == "1":
        pytest.skip("BRAINALIGN_SKIP_SLURM=1")
    if os.geteuid() != 0:
        pytest.skip("cluster/start.sh needs root")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("no Slurm and no apt-get")
    proc = subprocess.run([str(REPO / "cluster/start.sh")], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"cluster/start.sh failed:\n{proc.stderr[-3000:]}"
    was_running = "slurmctld: already running" in proc.stderr
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["SLURM_CONF"] = proc.stdout.strip().rpartition("=")[2]
    yield env
    if not was_running:
        subprocess.run([str(REPO / "cluster/stop.sh")], capture_output=True, timeout=180, check=False)


def cancel_jobs_in(workdir: Path, env) -> None:
    """scancel whatever a test left queued or running in ``workdir``."""
    out = run(["squeue", "-h", "-o", "%i %Z"], env=env, timeout=30).stdout
    ids = [line.split()[0] for line in out.splitlines() if line.split()[1:] == [str(workdir)]]
    if ids:
        run(["scancel", *ids], env=env, timeout=30)


@pytest.fixture
def toy(tmp_path, slurm_env):
    work = tmp_path / "toy"
    work.mkdir()
    shutil.copy(REPO / "cluster/toy.smk", work / "Snakefile")
    yield work
    cancel_jobs_in(work, slurm_env)


def toy_snakemake(work, env, *args, timeout=300):
    return run([SNAKEMAKE, "--profile", REPO / "profiles/slurm-test", "--jobs", "2", *args],
               env=env, cwd=work, timeout=timeout)


@pytest.mark.slurm
def test_cluster_smoke(slurm_env):
    proc = run([REPO / "cluster/check.sh"], env=slurm_env, timeout=180)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slurm
def test_toy_workflow_through_slurm_gpus_and_a_retry_with_more_memory(toy, slurm_env):
    """GPU rules ask sbatch for a GPU and the others do not; rule a fails its first attempt (1500 MB <
    min_mem) and its retry gets the profile's 2 x memory."""
    proc = toy_snakemake(toy, slurm_env, "--verbose", "--retries", "1", "--config", "min_mem=2000")
    assert proc.returncode == 0, proc.stdout[-4000:]
    calls = [line for line in proc.stdout.splitlines() if line.startswith("sbatch call:")]
    gpu_calls = [c for c in calls if "--comment rule_features" in c or "--comment rule_align" in c]
    a_calls = [c for c in calls if "--comment rule_a " in c]
    b_calls = [c for c in calls if "--comment rule_b " in c]
    assert len(gpu_calls) == 2 and len(a_calls) == 2 and len(b_calls) == 1, calls
    assert all("--gpus=1" in c and "--cpus-per-gpu=1" in c for c in gpu_calls), gpu_calls
    assert not any("--gpus" in c for c in a_calls + b_calls), calls
    assert all(" -A brainalign " in c and " -p debug " in c for c in calls), calls
    for line in (toy / "align.txt").read_text().splitlines():
        assert line.split()[1].partition("=")[2].isdigit(), line  # gpus=<CUDA_VISIBLE_DEVICES>
    assert "mem_mb=3000" in (toy / "a.txt").read_text()  # attempt 1 had 1500 and failed


TABLE_KEY = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature"]


# Through sbatch a trimmed demo runs: 2 subjects, 3 models, up to the tables, from the local run's
# mini-NSD (its generation is the demo's longest job) and, where a test says so, its features and
# brain files; the local run is the reference.
TRIMMED = {"subjects": ["subj01", "subj05"], "null_permutations": 0,
           "vision_models": ["tf_efficientnet_lite0", "tf_efficientnet_lite0.untrained"],
           "language_models": ["all-MiniLM-L6-v2"]}
TRIMMED_MODELS = TRIMMED["vision_models"] + TRIMMED["language_models"]
TRIMMED_ALIGN = len(TRIMMED["subjects"]) * 2  # one align batch per modality (config key align_batch)
TABLES = ["results/tables/vision_all.parquet", "results/tables/language_all.parquet"]
CEILINGS = [f"results/stats/split_half_ceiling/paper/{s}.csv" for s in TRIMMED["subjects"]]
# the same files of the demo (demo_stage's parts: under results/)
TABLES_OF_DEMO = [t.removeprefix("results/") for t in TABLES]
CEILINGS_OF_DEMO = [c.removeprefix("results/") for c in CEILINGS]


def trimmed_workdir(demo_run: Path, work: Path, reuse: tuple[str, ...]) -> Path:
    """A copy of the workflow with the trimmed config and the local run's ``results/<part>``
    for each part in ``reuse`` (mtimes kept, so Snakemake takes them as built)."""
    import yaml

    copy_workflow(work)
    (work / "trimmed.yaml").write_text(yaml.safe_dump(TRIMMED))
    for part in reuse:  # (the demo may still be writing: its temporary dot-files are left out)
        shutil.copytree(demo_run / "results" / part, work / "results" / part, ignore=shutil.ignore_patterns(".*"))
    return work


def demo_snakemake(work, env, *args, timeout=1200):
    # --configfile takes every value up to the next option: it goes last
    return run([SNAKEMAKE, "--profile", REPO / "profiles/slurm-test", *args, *TABLES, "--configfile", "trimmed.yaml"],
               env=env, cwd=work, timeout=timeout)


def assert_trimmed_tables_equal(work: Path, reference: Path) -> None:
    """The trimmed run's tables are the local run's rows of those subjects and models."""
    for modality in ("vision", "language"):
        got = pd.read_parquet(work / f"results/tables/{modality}_all.parquet")
        want = pd.read_parquet(reference / f"results/tables/{modality}_all.parquet")
        want = want[want["tgt_model"].isin(TRIMMED["subjects"]) & want["src_model"].isin(TRIMMED_MODELS)]
        assert set(got["src_model"]) == set(TRIMMED[f"{modality}_models"]) and len(got) == len(want) > 0
        columns = [c for c in want.columns if c in got.columns]
        assert columns[:8] == list(want.columns[:8])
        pd.testing.assert_frame_equal(got[columns].sort_values(TABLE_KEY).reset_index(drop=True),
                                      want[columns].sort_values(TABLE_KEY).reset_index(drop=True),
                                      check_categorical=False)


def running_job(env, matches, timeout: float, poll: float):
    """The id of the first running SLURM job whose (name, workdir) ``matches``, waiting up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(["squeue", "-h", "-t", "running", "-o", "%i %k %Z"], env=env, timeout=30).stdout
        job = next((f[0] for f in map(str.split, out.splitlines()) if len(f) == 3 and matches(f[1], f[2])), None)
        if job:
            return job
        time.sleep(poll)
    return None


@pytest.mark.slurm
def test_demo_workflow_through_slurm_scancel_and_rerun_equals_local_run(demo_stage, slurm_env, tmp_path):
    """The demo's rules through real sbatch (ingest, features of two models, every align job, aggregate,
    the split-half ceilings): GPU rules ask for a GPU, the others do not. An align job cancelled with
    scancel while it runs fails the run; the profile's rerun does only what is missing (no finished file is
    recomputed), and the outputs equal the local run's. It starts from the demo's first outputs while the demo
    goes on."""
    demo_run = demo_stage("mini_nsd/ground_truth.json", *(f"stimuli/paper/{s}.csv" for s in TRIMMED["subjects"]),
                          *(f"features/paper/{s}/tf_efficientnet_lite0.h5" for s in TRIMMED["subjects"]))
    work = trimmed_workdir(demo_run, tmp_path / "slurm_demo", ("mini_nsd", "stimuli"))
    keep = work / "results/features/paper"
    for subject in TRIMMED["subjects"]:  # one model's features reused, the other two built through sbatch
        (keep / subject).mkdir(parents=True, exist_ok=True)
        shutil.copy2(demo_run / f"results/features/paper/{subject}/tf_efficientnet_lite0.h5", keep / subject)
    cmd = [SNAKEMAKE, "--profile", str(REPO / "profiles/slurm-test"), "--verbose", *CEILINGS, *TABLES,
           "--configfile", "trimmed.yaml"]
    log = tmp_path / "first_run.log"  # a file, not a pipe: --verbose fills a pipe's buffer before the align jobs
    with open(log, "w") as out:
        sm = subprocess.Popen(cmd, cwd=work, env=slurm_env, stdout=out, stderr=subprocess.STDOUT)
        try:
            job = running_job(slurm_env, lambda name, cwd: name.startswith("rule_align") and cwd == str(work), 900,
                              0.3)
            assert job, "no align job ever ran"
            run(["scancel", job], env=slurm_env, timeout=30)
            sm.wait(timeout=900)
        finally:
            if sm.poll() is None:
                sm.kill()
                sm.wait()
    first = log.read_text()
    assert sm.returncode != 0, first[-4000:]
    assert f"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'" in first, first[-4000:]
    assert job_counts(first) == {"ingest": 2, "brain_summary": 2, "features": 2, "align": TRIMMED_ALIGN,
                                 "aggregate": 2, "split_half_ceiling": 2, "total": 10 + TRIMMED_ALIGN}
    finished = {p: p.stat().st_mtime_ns for part in ("brain", "features", "alignment")
                for p in (work / "results" / part).rglob("*") if p.is_file() and not p.name.startswith(".")}
    aligned = [p for p in finished if p.suffix == ".parquet"]
    assert len(aligned) < TRIMMED_ALIGN

    proc = demo_snakemake(work, slurm_env, "--verbose", *CEILINGS)
    assert proc.returncode == 0, proc.stdout[-4000:]
    counts = job_counts(proc.stdout)
    assert counts["align"] == TRIMMED_ALIGN - len(aligned), counts
    assert not {"features", "mini_nsd", "stimuli"} & set(counts), counts  # an align job ran: both were done
    for rule, end in (("ingest", ".h5"), ("brain_summary", ".summary.h5")):  # done by then too, or not: as found
        done = {p.name for p in finished if p.parent.name == "paper" and p.parent.parent.name == "brain"}
        missing = [s for s in TRIMMED["subjects"] if f"{s}{end}" not in done]
        assert counts.get(rule, 0) == len(missing), (rule, counts)
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    calls = [line for out in (first, proc.stdout) for line in out.splitlines() if line.startswith("sbatch call:")]
    gpu_rules = ("--comment rule_features", "--comment rule_brain_summary", "--comment rule_align",
                 "--comment rule_split_half_ceiling")
    gpu_calls = [c for c in calls if any(r in c for r in gpu_rules)]
    other_calls = [c for c in calls if c not in gpu_calls]
    for rule in ("features", "brain_summary", "align", "split_half_ceiling", "ingest", "aggregate"):
        assert any(f"--comment rule_{rule}" in c for c in calls), (rule, calls)
    assert all("--gpus=1" in c for c in gpu_calls), gpu_calls
    assert other_calls and not any("--gpus" in c for c in other_calls), other_calls
    demo_run = demo_stage(*TABLES_OF_DEMO, *CEILINGS_OF_DEMO)  # the local run's, once they have landed
    assert_trimmed_tables_equal(work, demo_run)
    for path in CEILINGS:  # a GPU rule with device auto, on a node without a GPU
        pd.testing.assert_frame_equal(pd.read_csv(work / path), pd.read_csv(demo_run / path))
