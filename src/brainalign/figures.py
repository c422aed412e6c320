"""Figures: each writes a PNG, a PDF and the CSV of the numbers behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.analysis import POOLINGS
from brainalign.io import atomic_path, write_csv
from brainalign.stats import correlate

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


def performance_figure(scores: dict[str, pd.DataFrame], benchmarks: dict[str, str], metric: str,
                       pooling: str, png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """Brain score vs benchmark, one panel per modality (figure family 1).

    ``scores``: modality -> per-model table (``model``, ``arch``, the ``cka_*`` brain scores,
    the benchmark columns); ``benchmarks``: modality -> benchmark column for the x axis;
    ``pooling``: how measurements became one score per model (printed on the figure).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    fig, axes = plt.subplots(1, len(scores), figsize=(5.2 * len(scores), 4.4), squeeze=False)
    for ax, (modality, per_model) in zip(axes[0], scores.items(), strict=True):
        bench = benchmarks[modality]
        scores_m = pd.DataFrame({
            "src_model": per_model["model"],
            "brain_score": per_model[metric],
            "benchmark": per_model.get(bench, np.nan),
            "arch": per_model.get("arch"),
        })
        scores_m["modality"] = modality
        scores_m["benchmark_name"] = bench
        scores = scores_m
        rows.append(scores)
        has = scores["benchmark"].notna()
        if not has.any():
            _scores_without_benchmark(ax, scores, metric, bench, modality)
            continue
        many = has.sum() > 25  # label points only when they stay readable
        groups = scores[has].groupby(scores.loc[has, "arch"].fillna("other") if modality == "vision"
                                     else pd.Series("model", index=scores.index)[has])
        for arch, group in groups:
            ax.scatter(group["benchmark"], group["brain_score"], s=10 if many else 36, alpha=0.7 if many else 1,
                       color=ARCH_COLOURS.get(arch, "tab:purple"), label=arch, zorder=3)
        if not many:
            for _, r in scores[has].iterrows():
                ax.annotate(r["src_model"], (r["benchmark"], r["brain_score"]), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
        stats = correlate(scores.loc[has, "benchmark"].to_numpy(), scores.loc[has, "brain_score"].to_numpy())
        r, p = stats["pearson_r"], stats["pearson_p"]
        if has.sum() >= 2:
            fit = np.polyfit(scores.loc[has, "benchmark"], scores.loc[has, "brain_score"], 1)
            xs = np.linspace(scores.loc[has, "benchmark"].min(), scores.loc[has, "benchmark"].max(), 50)
            ax.plot(xs, np.polyval(fit, xs), color="0.4", lw=1, ls="--", label="linear fit")
        missing = scores.loc[~has, "src_model"].tolist()
        stat = f"Pearson r = {r:.3f}, p = {p:.2g} (n = {int(has.sum())})" if np.isfinite(r) else \
            f"n = {int(has.sum())} models (Pearson r needs >= 3)"
        if missing:
            stat += f"\nno {bench} value: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
        ax.text(0.02, 0.98, stat, transform=ax.transAxes, va="top", fontsize=8)
        unit = " (top-1 accuracy, fraction)" if modality == "vision" else " (leaderboard score, %)"
        ax.set_xlabel(f"{bench}{unit}")
        ax.set_ylabel(f"brain score ({metric}, unitless)")
        ax.set_title(f"{modality} models")
        ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.25 if not many else 0.05, y=0.2 if not many else 0.05)
    fig.suptitle(f"Brain score vs benchmark. Pooling: {POOLINGS.get(pooling, pooling)}", fontsize=9)
    fig.tight_layout()
    _save(fig, Path(png), Path(pdf))
    plt.close(fig)
    out = pd.concat(rows, ignore_index=True)
    out["metric"] = metric
    out["pooling"] = pooling
    write_csv(out, csv)
    return out
