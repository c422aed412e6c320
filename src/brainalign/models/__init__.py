"""Models: the registry, feature extraction from every model source, weights, training runs.

``brainalign.models`` was one module before the package was laid out by stage: its names
are re-exported here from :mod:`brainalign.models.registry`, so existing imports keep working."""

from brainalign.models.registry import *  # noqa: F401,F403
