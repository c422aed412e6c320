"""Old import paths of modules that moved when the package was laid out by workflow stage.

Each old module (``brainalign/metrics.py`` ...) is a two-line shim that calls :func:`alias`: the
old name then refers to the new module itself (same object: monkeypatching and private names
work), and a ``FutureWarning`` names the new path. The shims go in the release after next.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType


def alias(old: str, new: str) -> ModuleType:
    """Import ``new`` and make ``old`` the same module, warning once that ``old`` moved."""
    module = importlib.import_module(new)
    sys.modules[old] = module
    warnings.warn(f"{old} moved to {new}: import it from there ({old} goes in the release after next)",
                  FutureWarning, stacklevel=3)
    return module
