"""Analysis: the measurement tables out of core, statistics, robustness, lead-lag, and the pandas
reference they are tested against.

``brainalign.analysis`` was one module before the package was laid out by stage: its names
are re-exported here from :mod:`brainalign.analysis.reference`, so existing imports keep working."""

from brainalign.analysis.reference import *  # noqa: F401,F403
