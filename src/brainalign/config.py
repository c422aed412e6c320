"""Configuration checks run when the workflow starts."""

from __future__ import annotations

from pathlib import Path

import yaml

from brainalign.io import InputError


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate ``config`` against the JSON schema; raise a one-line :class:`InputError`.

    The message names the offending key and what is expected, e.g.
    ``config key 'subjects': 'subj01' is not of type 'array'``.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    if not errors:
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
