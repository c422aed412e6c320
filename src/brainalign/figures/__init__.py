"""Figures: the panels, the figure stages of the workflow and the brain maps.

``brainalign.figures`` was one module before the package was laid out by stage: its names
are re-exported here from :mod:`brainalign.figures.panels`, so existing imports keep working."""

from brainalign.figures.panels import *  # noqa: F401,F403
