"""Moved to :mod:`brainalign.bench.scale`; this path keeps working for one release, with a warning."""

from brainalign._moved import alias

_module = alias(__spec__.name, "brainalign.bench.scale")
if __name__ == "__main__":
    raise SystemExit(_module.main())
