"""The documentation site: its configuration reference covers the schema, and it builds offline.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the navigation
or a ``:::`` API object that does not resolve (``mkdocs.yml``'s ``validation`` and ``strict``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

MKDOCS = str(Path(sys.executable).parent / "mkdocs")
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def gen_config_docs():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import gen_config_docs
    finally:
        sys.path.pop(0)
    return gen_config_docs


def schema_keys(node, prefix: str = "") -> list[str]:
    """Every key of the schema as a dotted path, nested objects and object branches of oneOf/anyOf included."""
    out = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            out.append(f"{prefix}{name}")
            out += schema_keys(sub, f"{prefix}{name}.")
        for branch in node.get("oneOf", []) + node.get("anyOf", []) + node.get("allOf", []):
            out += schema_keys(branch, prefix)
    return out


def test_the_schema_has_nested_keys():
    keys = schema_keys(yaml.safe_load(SCHEMA.read_text()))
    assert {"nsd_root", "analysis.metric", "encoding.selection", "mini_nsd.seed", "sessions.max"} <= set(keys)


def test_every_schema_key_is_in_the_configuration_page():
    schema = yaml.safe_load(SCHEMA.read_text())
    page = gen_config_docs().generate().split("## Notes per key")[0]  # the generated table only
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([^`]+)` \|.*$", page, flags=re.MULTILINE)}
    for key in schema_keys(schema):
        assert key in rows, f"config key {key!r} missing from the generated configuration page"
    gen = gen_config_docs()
    for key, node, _ in gen.iter_keys(schema):
        if "default" in node:
            assert f"`{gen._literal(node['default'])}`" in rows[key], key
        description = node.get("description")
        assert description, f"config key {key!r} has no description in workflow/schemas/config.schema.yaml"
        assert " ".join(description.split()[:3]) in rows[key], key


def test_configuration_page_on_disk_is_current():
    """``make docs`` and every ``mkdocs build`` (the hook) write it; a copy on disk must match the schema."""
    path = REPO / "docs" / "configuration.md"
    if not path.exists():
        pytest.skip("docs/configuration.md not generated yet (make docs writes it)")
    assert path.read_text() == gen_config_docs().generate(), "stale: run .venv/bin/python tools/gen_config_docs.py"


def test_readme_links_resolve():
    text = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to a missing file: {target}"


def test_mkdocs_build_strict_offline(tmp_path):
    start = time.monotonic()
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's end-of-life banner
    proc = subprocess.run([MKDOCS, "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert seconds < 60, f"mkdocs build took {seconds:.0f} s"
    site = tmp_path / "site"
    for page in ("index", "getting-started", "configuration", "metrics", "api", "troubleshooting"):
        assert (site / (f"{page}/index.html" if page != "index" else "index.html")).exists(), page
    html = (site / "configuration" / "index.html").read_text()
    for key in schema_keys(yaml.safe_load(SCHEMA.read_text())):
        assert f"<code>{key}</code>" in html, key
    api = (site / "api" / "index.html").read_text()
    assert "score_matrices" in api and "Alignment of every (source key, target key) pair" in api
    assert "fonts.googleapis.com" not in "".join(p.read_text() for p in site.rglob("*.html"))


def test_mkdocs_build_strict_fails_on_a_broken_link(tmp_path):
    """The guard `make check` relies on: a link to a missing page or anchor fails the strict build."""
    import shutil

    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    for name in ("src", "tools", "workflow"):
        (tmp_path / name).symlink_to(REPO / name)
    with (tmp_path / "docs" / "mini-nsd.md").open("a") as f:
        f.write("\nSee [the missing page](no-such-page.md) and [an anchor](api.md#no-such-anchor).\n")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([MKDOCS, "build", "--strict", "-d", str(tmp_path / "site")], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120, check=False)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "no-such-page.md" in proc.stdout and "no-such-anchor" in proc.stdout
