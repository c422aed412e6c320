"""brainalign: how well AI model representations align with human brain activity.

The public entry point for users' own arrays is :func:`align`; the workflow's
stages live in :mod:`brainalign.pipeline`.
"""

from brainalign.alignment.metrics import ALL_METRICS, align

__all__ = ["ALL_METRICS", "align"]
__version__ = "0.1.0"
