"""Figures: each writes a PNG, a PDF and the CSV of the numbers behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.analysis import POOLINGS, brain_scores, pearson
from brainalign.io import atomic_path, write_csv

ARCH_COLOURS = {"CNN": "tab:blue", "Transformer": "tab:orange", "Hybrid": "tab:green"}


def _save(fig, png: Path, pdf: Path) -> None:
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")


def _scores_without_benchmark(ax, scores: pd.DataFrame, metric: str, bench: str, modality: str) -> None:
    """When no model of a panel has the benchmark, show the brain scores alone, and say so."""
    ordered = scores.sort_values("brain_score")
    ax.barh(ordered["src_model"], ordered["brain_score"], color="tab:gray")
    ax.set_xlabel(f"brain score ({metric}, unitless)")
    ax.set_title(f"{modality} models: no {bench} value for these models", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)


def performance_figure(tables: dict[str, pd.DataFrame], benchmarks: dict[str, str], metric: str,
                       pooling: str, png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """Brain score vs benchmark, one panel per modality (figure family 1).

    ``tables``: modality -> table with the paper's columns; ``benchmarks``:
    modality -> benchmark column for the x axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 4.4), squeeze=False)
    for ax, (modality, table) in zip(axes[0], tables.items(), strict=True):
        bench = benchmarks[modality]
        scores = brain_scores(table, metric, pooling)
        per_model = table.drop_duplicates("src_model").set_index("src_model")
        scores["benchmark"] = scores["src_model"].map(per_model[bench]) if bench in per_model else np.nan
        scores["arch"] = scores["src_model"].map(per_model["arch"]) if "arch" in per_model else None
        scores["modality"] = modality
        scores["benchmark_name"] = bench
        rows.append(scores)
        has = scores["benchmark"].notna()
        if not has.any():
            _scores_without_benchmark(ax, scores, metric, bench, modality)
            continue
        groups = scores[has].groupby(scores.loc[has, "arch"].fillna("other") if modality == "vision"
                                     else pd.Series("model", index=scores.index)[has])
        for arch, group in groups:
            ax.scatter(group["benchmark"], group["brain_score"], s=36,
                       color=ARCH_COLOURS.get(arch, "tab:purple"), label=arch, zorder=3)
        for _, r in scores[has].iterrows():
            ax.annotate(r["src_model"], (r["benchmark"], r["brain_score"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        r, p = pearson(scores.loc[has, "benchmark"].to_numpy(), scores.loc[has, "brain_score"].to_numpy())
        if has.sum() >= 2:
            fit = np.polyfit(scores.loc[has, "benchmark"], scores.loc[has, "brain_score"], 1)
            xs = np.linspace(scores.loc[has, "benchmark"].min(), scores.loc[has, "benchmark"].max(), 50)
            ax.plot(xs, np.polyval(fit, xs), color="0.4", lw=1, ls="--", label="linear fit")
        missing = scores.loc[~has, "src_model"].tolist()
        stat = f"Pearson r = {r:.2f}, p = {p:.2g} (n = {int(has.sum())})" if np.isfinite(r) else \
            f"n = {int(has.sum())} models (Pearson r needs >= 3)"
        if missing:
            stat += f"\nno {bench} value: {', '.join(missing)}"
        ax.text(0.02, 0.98, stat, transform=ax.transAxes, va="top", fontsize=8)
        unit = " (top-1 accuracy, fraction)" if modality == "vision" else " (leaderboard score, %)"
        ax.set_xlabel(f"{bench}{unit}")
        ax.set_ylabel(f"brain score ({metric}, unitless)")
        ax.set_title(f"{modality} models")
        ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.25, y=0.2)
    fig.suptitle(f"Brain score vs benchmark. Pooling: {POOLINGS[pooling]}", fontsize=9)
    fig.tight_layout()
    _save(fig, Path(png), Path(pdf))
    plt.close(fig)
    out = pd.concat(rows, ignore_index=True)
    out["metric"] = metric
    out["pooling"] = pooling
    write_csv(out, csv)
    return out
