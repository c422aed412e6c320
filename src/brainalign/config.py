"""Configuration checks run when the workflow starts."""

from __future__ import annotations

from pathlib import Path

import yaml

from brainalign.io import InputError


def fill_defaults(config: dict, schema: dict) -> dict:
    """Set every key the schema gives a ``default`` and ``config`` lacks, recursing into objects
    (an object's own default, e.g. ``{}``, is filled first, then its properties'). The schema is the
    one place defaults live. Returns ``config``, changed in place."""
    import copy

    for key, prop in schema.get("properties", {}).items():
        if key not in config and "default" in prop:
            config[key] = copy.deepcopy(prop["default"])
        if isinstance(config.get(key), dict) and "properties" in prop:
            fill_defaults(config[key], prop)
    return config


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate ``config`` against the JSON schema and fill in its defaults; raise a one-line
    :class:`InputError`.

    The message names the offending key and what is expected, e.g.
    ``config key 'subjects': 'subj01' is not of type 'array'``.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    if not errors:
        fill_defaults(config, schema)
        return
    err = errors[0]
    if err.validator == "additionalProperties":
        where = ".".join(str(p) for p in err.path)
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        known = ", ".join(sorted(err.schema.get("properties", {})))
        name = f"{where}.{extra[0]}" if where else extra[0]
        raise InputError(f"config key {name!r} is not a known setting (known: {known})")
    key = ".".join(str(p) for p in err.path) or "(top level)"
    raise InputError(f"config key {key!r}: {err.message} (see workflow/schemas/config.schema.yaml)")
