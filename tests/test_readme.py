"""Every Snakemake command the README and the documentation print builds its DAG as printed.

Each ``.venv/bin/snakemake`` line of the code blocks of the README and of every ``docs/*.md``
page (the same command printed in several places runs once) runs here as written, on a fresh
copy of the workflow, with a
dry-run flag added (the real runs are the demo run and the tests that reuse it) and two
paths of the README's examples pointed at stand-ins: ``/data/nsd`` at a placeholder NSD
release (every input file, empty) and ``/data/intermediate_results`` at small synthetic
tables. ``--unlock`` runs for real; ``--report`` needs a finished run and is run by
``test_workflow.test_report_builds_offline_with_every_figure``. Every ``make`` command of
those blocks names a target of the Makefile.
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
DOCS = sorted((REPO / "docs").glob("*.md"))
STAND_INS = ("/data/nsd", "/data/intermediate_results")


def shell_commands(path: Path, program: str = ".venv/bin/snakemake") -> list[str]:
    """The commands of a Markdown file's code blocks that start with ``program``, comments removed,
    ``&&`` chains split."""
    text = path.read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    out = []
    for block in blocks:
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            out += [part.strip() for part in line.split("&&") if re.match(rf"{re.escape(program)}(\s|$)", part.strip())]
    return out


def readme_commands() -> list[str]:
    """The Snakemake commands of the README's code blocks."""
    return shell_commands(README)


def docs_commands() -> list[str]:
    """The Snakemake commands of every documentation page's code blocks."""
    return [c for page in DOCS for c in shell_commands(page)]


def all_commands() -> list[str]:
    """The README's and the documentation's Snakemake commands, each once, in order of appearance."""
    return list(dict.fromkeys(readme_commands() + docs_commands()))


def test_the_documentation_has_shell_commands():
    assert DOCS, "docs/ has no pages"
    assert docs_commands(), "no Snakemake command in the documentation's code blocks"


def test_each_make_command_names_a_makefile_target():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    for path in (README, *DOCS):
        for command in shell_commands(path, "make"):
            words = [w for w in shlex.split(command)[1:] if "=" not in w and not w.startswith("-")]
            assert words, f"{path.name}: {command}: no target"
            for word in words:
                assert word in targets, f"{path.name}: {command}: no Makefile target {word!r}"


@pytest.mark.parametrize("commands", [readme_commands, all_commands], ids=["readme", "readme+docs"])
def test_the_readme_prints_the_commands_users_need(commands):
    commands = commands()
    for needed in ("-n", "--unlock", "--rerun-incomplete", "--report", "nsd_root=/data/nsd",
                   "config/nsd.yaml", "config/paper.yaml", "tables_from=", "--profile profiles/slurm"):
        assert any(needed in c for c in commands), needed


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    from brainalign.bench.synthetic import write_tables

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


@pytest.mark.parametrize("command", [c for c in all_commands() if "--report" not in c])
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
