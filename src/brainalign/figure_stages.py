"""Moved to :mod:`brainalign.figures.stages`; this path keeps working for one release, with a warning."""

from brainalign._moved import alias

_module = alias(__spec__.name, "brainalign.figures.stages")
