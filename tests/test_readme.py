"""Every Snakemake command the README prints builds its DAG as printed, on a fresh copy.

Each ``.venv/bin/snakemake`` line of the README's code blocks runs here as written, with a
dry-run flag added (the real runs are the demo run and the tests that reuse it) and two
paths of the README's examples pointed at stand-ins: ``/data/nsd`` at a placeholder NSD
release (every input file, empty) and ``/data/intermediate_results`` at small synthetic
tables. ``--unlock`` runs for real; ``--report`` needs a finished run and is run by
``test_workflow.test_report_builds_offline_with_every_figure``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SNAKEMAKE, copy_workflow

pytestmark = pytest.mark.workflow

README = REPO / "README.md"
STAND_INS = ("/data/nsd", "/data/intermediate_results")


def readme_commands() -> list[str]:
    """The Snakemake commands of the README's code blocks, comments removed, ``&&`` chains split."""
    text = README.read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    out = []
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            out += [part.strip() for part in line.split("&&") if part.strip().startswith(".venv/bin/snakemake")]
    return out


def test_the_readme_prints_the_commands_users_need():
    commands = readme_commands()
    for needed in ("-n", "--unlock", "--rerun-incomplete", "--report", "nsd_root=/data/nsd",
                   "config/nsd.yaml", "config/paper.yaml", "tables_from=", "--profile profiles/slurm"):
        assert any(needed in c for c in commands), needed


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    from brainalign.synthetic import write_tables

    root = tmp_path_factory.mktemp("stand_ins")
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from placeholder_nsd import write_placeholder
    finally:
        sys.path.pop(0)
    write_placeholder(root / "nsd", ["subj01", "subj02", "subj05", "subj07"])
    write_tables(root / "tables", n_vision=6, n_language=4, metrics=["cka_28", "cka_36", "cka_68", "mutual_knn_20"],
                 n_rois=12)
    return {"/data/nsd": root / "nsd", "/data/intermediate_results": root / "tables"}


@pytest.mark.parametrize("command", [c for c in readme_commands() if "--report" not in c])
def test_each_readme_command_runs_as_printed(command, stand_ins, tmp_path):
    work = copy_workflow(tmp_path / "w")
    shutil.copytree(REPO / "profiles", work / "profiles")
    for config in (work / "config").glob("*.yaml"):  # e.g. config/nsd.yaml's nsd_root: /data/nsd
        text = config.read_text()
        for path, stand_in in stand_ins.items():
            text = text.replace(f": {path}\n", f": {stand_in}\n")
        config.write_text(text)
    for path, stand_in in stand_ins.items():
        command = command.replace(path, str(stand_in))
    args = shlex.split(command)[1:]
    if "--unlock" not in args and "-n" not in args:
        args.insert(0, "-n")
    proc = subprocess.run([SNAKEMAKE, *args], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{command}:\n{proc.stdout[-3000:]}"
    assert "Error" not in proc.stdout, proc.stdout[-3000:]
    if "--unlock" not in args:
        assert "Job stats:" in proc.stdout or "Nothing to be done" in proc.stdout
