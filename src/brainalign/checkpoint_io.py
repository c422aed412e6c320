"""Moved to :mod:`brainalign.models.checkpoint_io`; this path keeps working for one release, with a warning."""

from brainalign._moved import alias

_module = alias(__spec__.name, "brainalign.models.checkpoint_io")
