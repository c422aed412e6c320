"""The conda envs of the rules (envs/*.yaml, for users' clusters) pin what requirements.txt pins."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s#]+)\s*(#.*)?", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_every_env_pins_the_versions_of_requirements_txt():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert len(envs) >= 4
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        deps = spec["dependencies"]
        assert "python=3.11" in deps, env
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        mine = pins(pip)
        assert mine, f"{env}: no pinned pip packages"
        unpinned = [d for d in pip if "==" not in d and not d.startswith("-e")]
        assert not unpinned, f"{env}: unpinned {unpinned}"
        wrong = {k: (v, required.get(k)) for k, v in mine.items() if required.get(k) != v}
        assert not wrong, f"{env}: pins differ from requirements.txt (env, requirements): {wrong}"


def test_the_dev_tools_are_pinned():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    assert {"ruff", "snakefmt", "pytest"} <= set(required)
