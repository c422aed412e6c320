"""Tables the project ships (converted from the paper's reference material)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd


def _path(name: str):
    return resources.files("brainalign") / "resources" / name


@lru_cache
def hcp_parcels() -> pd.DataFrame:
    """HCP-MMP1 parcels: ``index`` (1..180, atlas order), ``name``, ``yeo7``."""
    return pd.read_csv(_path("hcp_mmp1.csv"), dtype={"name": str})


@lru_cache
def vision_benchmarks() -> pd.DataFrame:
    """timm ImageNet-family top-1 (fractions), ``arch`` and ``#Params (M)`` per timm model."""
    return pd.read_csv(_path("vision_benchmarks.csv"))


@lru_cache
def language_benchmarks() -> pd.DataFrame:
    """Open LLM Leaderboard v2 columns and Arena ``elo`` per language model."""
    return pd.read_csv(_path("language_benchmarks.csv"))


VISION_BENCHMARK_COLUMNS = [
    "imagenet", "imagenet-a", "imagenet-a-clean", "imagenet-r", "imagenet-r-clean",
    "imagenet-real", "imagenetv2-matched-frequency", "sketch", "#Params (M)",
]
LANGUAGE_BENCHMARK_COLUMNS = [
    "Average ⬆️", "IFEval", "BBH", "MATH Lvl 5", "GPQA", "MUSR", "MMLU-PRO", "#Params (B)", "elo",
]


@lru_cache
def paper_subject_consistency(modality: str) -> pd.DataFrame:
    """The paper's between-subject correlation of model scores (``S01``.. x ``S01``..)."""
    name = {"vision": "vision_corr.csv", "language": "lang_corr.csv"}[modality]
    return pd.read_csv(_path(f"paper_tables/{name}"), index_col=0)


@lru_cache
def paper_roi_scores(modality: str) -> pd.DataFrame:
    """The paper's per-ROI scores (``metric, tgt_feature, yeo7, tgt_model, score, normalized_score``)."""
    return pd.read_csv(_path(f"paper_tables/brain_regions/{modality}.csv"), dtype={"tgt_feature": str})


@lru_cache
def paper_kernel_size(modality: str) -> pd.DataFrame:
    """The paper's per-ROI change from cka_28 to cka_68 with its sign consistency across subjects."""
    return pd.read_csv(_path(f"paper_tables/kernel_size_{modality}/28_68_consistency.csv"), index_col=0,
                       dtype={"tgt_feature": str})
