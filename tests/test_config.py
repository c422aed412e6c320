"""Config defaults live in the schema alone and reach the workflow's resolved config."""

import re
from pathlib import Path

import pytest
import yaml

from brainalign.config import fill_defaults, validate_config
from brainalign.io import InputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
MINIMAL = {"nsd_root": "results/mini_nsd", "subjects": ["subj01"], "rois": "all", "split": "paper",
           "vision_models": [], "language_models": [], "metrics": "all", "device": "cpu"}


def schema_defaults(schema, prefix=()):
    """(path, default) of every property that declares one, nested objects included."""
    for key, prop in schema.get("properties", {}).items():
        if "default" in prop and "properties" not in prop:
            yield (*prefix, key), prop["default"]
        if "properties" in prop:
            yield from schema_defaults(prop, (*prefix, key))


def test_every_schema_default_is_filled_into_a_minimal_config():
    schema = yaml.safe_load(SCHEMA.read_text())
    defaults = list(schema_defaults(schema))
    assert len(defaults) >= 15
    config = dict(MINIMAL)
    validate_config(config, SCHEMA)  # what the Snakefile does with its config, before any rule file reads it
    snakefile = (REPO / "workflow/Snakefile").read_text()
    assert snakefile.index('validate_config(config, workflow.source_path("schemas/config.schema.yaml"))') < \
        snakefile.index('include: "rules/common.smk"')
    for path, value in defaults:
        got = config
        for key in path:
            got = got[key]
        assert got == value, path


def test_a_users_value_wins_and_nested_defaults_fill_around_it():
    schema = yaml.safe_load(SCHEMA.read_text())
    config = fill_defaults(dict(MINIMAL) | {"analysis": {"metric": "cka_68"}, "null_permutations": 5}, schema)
    assert config["analysis"]["metric"] == "cka_68" and config["analysis"]["kernel_sizes"] == [28, 68]
    assert config["null_permutations"] == 5 and config["mini_nsd"]["seed"] == 0


def test_a_bad_value_is_reported_before_any_default_is_filled():
    config = dict(MINIMAL) | {"null_permutations": -1}
    with pytest.raises(InputError, match="null_permutations"):
        validate_config(config, SCHEMA)
    assert "analysis" not in config


def test_no_rule_file_defines_a_default_of_its_own():
    """``config.get(key, default)`` or ``{...} | config.get(...)`` in the workflow would be a second
    source of a default; the only ``config.get`` calls left read keys with no default (optional paths)
    or derive one from another key."""
    allowed = {"tables_from", "coco_annotations", "results"}
    for smk in [REPO / "workflow/Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))]:
        for m in re.finditer(r"config\.get\(\s*\"([a-z_]+)\"", smk.read_text()):
            assert m.group(1) in allowed, f"{smk.name}: config.get({m.group(1)!r}) (put its default in the schema)"
