"""From measurements to one brain score per model, and the statistics behind the figures."""

from __future__ import annotations

import pandas as pd

POOLINGS = {
    "max_roi_mean_layer": "max over ROIs per (model, subject, layer), then mean over layers and subjects",
    "max_roi_max_layer": "max over ROIs per (model, subject, layer), max over layers, mean over subjects",
    "mean_roi_mean_layer": "mean over ROIs, layers and subjects",
}


def brain_scores(table: pd.DataFrame, metric: str = "cka_36", pooling: str = "max_roi_mean_layer") -> pd.DataFrame:
    """One score per model: columns ``src_model``, ``brain_score``, ``n_subjects``.

    ``table`` has the paper's columns (``src_model, tgt_model, metric, src_feature,
    tgt_feature, score``). ``pooling`` is a key of :data:`POOLINGS`.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; one of {list(POOLINGS)}")
    df = table[table["metric"] == metric]
    if df.empty:
        raise ValueError(f"no rows for metric {metric!r} in the table")
    keys = ["src_model", "tgt_model", "src_feature"]
    roi = df.groupby(keys)["score"].agg("mean" if pooling.startswith("mean_roi") else "max")
    layer = roi.groupby(level=[0, 1]).agg("max" if pooling == "max_roi_max_layer" else "mean")
    out = layer.groupby(level=0).agg(["mean", "count"])
    return out.rename(columns={"mean": "brain_score", "count": "n_subjects"}).reset_index()

