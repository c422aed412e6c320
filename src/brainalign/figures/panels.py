"""Figures: each writes a PNG, a PDF and the CSV of the numbers behind it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.analysis.reference import POOLINGS
from brainalign.analysis.stats import correlate
from brainalign.io import InputError, atomic_path, write_csv

ARCH_COLOURS = {"CNN": "tab:blue", "Transformer": "tab:orange", "Hybrid": "tab:green"}


def _save(fig, png: Path, pdf: Path) -> None:
    for path, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")


def _scores_without_benchmark(ax, scores: pd.DataFrame, metric: str, bench: str, modality: str) -> None:
    """When no model of a panel has the benchmark, show the brain scores alone, and say so."""
    ordered = scores.sort_values("brain_score").reset_index(drop=True)
    ax.barh(np.arange(len(ordered)), ordered["brain_score"], color="0.75")
    for i, r in ordered.iterrows():  # names inside the bars: long model names do not squeeze the panel
        ax.text(0.01, i, r["src_model"], transform=ax.get_yaxis_transform(), va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_ylabel("model")
    ax.set_xlabel(f"brain score ({metric}, unitless)")
    ax.set_title(f"{modality} models: no {bench} value for these models", fontsize=10)


def _label_points(ax, df: pd.DataFrame, x: str, y: str, name: str, gap_pt: float = 9.0) -> None:
    """Name each point, nudging labels apart vertically so that none overlaps another."""
    fig = ax.figure
    ax.figure.canvas.draw()  # fixes the axis limits, so data -> display is final
    to_pt = 72.0 / fig.dpi
    xy = ax.transData.transform(df[[x, y]].to_numpy(float)) * to_pt
    order = np.argsort(xy[:, 1])
    placed = []
    for i in order:
        ly = xy[i, 1] + 3
        for px, py in placed:  # labels start at their point's x and run ~5 pt per character to the right
            if abs(px - xy[i, 0]) < 5 * len(str(df[name].iloc[i])) and ly - py < gap_pt:
                ly = py + gap_pt
        placed.append((xy[i, 0], ly))
        ax.annotate(str(df[name].iloc[i]), (df[x].iloc[i], df[y].iloc[i]), fontsize=7, xytext=(5, ly - xy[i, 1]),
                    textcoords="offset points", va="bottom",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if ly - xy[i, 1] > 6 else None)


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
        stats = correlate(scores.loc[has, "benchmark"].to_numpy(), scores.loc[has, "brain_score"].to_numpy())
        r, p = stats["pearson_r"], stats["pearson_p"]
        bx, by = scores.loc[has, "benchmark"].to_numpy(float), scores.loc[has, "brain_score"].to_numpy(float)
        if has.sum() >= 2 and np.ptp(bx) > 0:
            xs = np.linspace(bx.min(), bx.max(), 100)
            ax.plot(xs, np.polyval(np.polyfit(bx, by, 1), xs), color="0.4", lw=1, ls="--", label="linear fit")
            if (bx > 0).all():  # y = a + b log(x): the paper's log fit
                b, a = np.polyfit(np.log(bx), by, 1)
                ax.plot(xs, a + b * np.log(xs), color="0.2", lw=1, ls=":", label="log fit")
        missing = scores.loc[~has, "src_model"].tolist()
        stat = (f"Pearson r = {r:.3f}, p = {p:.2g}\nSpearman ρ = {stats['spearman_rho']:.3f}, "
                f"p = {stats['spearman_p']:.2g} (n = {int(has.sum())})") if np.isfinite(r) else \
            f"n = {int(has.sum())} models (r needs >= 3)"
        if missing:
            stat += (f"\nno {bench} value: {', '.join(missing)}" if len(missing) <= 2 else
                     f"\nno {bench} value: {len(missing)} models (in the CSV)")
        ax.text(0.02, 0.98, stat, transform=ax.transAxes, va="top", fontsize=8)
        unit = " (top-1 accuracy, fraction)" if modality == "vision" else " (leaderboard score, %)"
        ax.set_xlabel(f"{bench}{unit}")
        ax.set_ylabel(f"brain score ({metric}, unitless)")
        ax.set_title(f"{modality} models")
        ax.legend(loc="lower right", fontsize=8)
        ax.margins(x=0.35 if not many else 0.05, y=0.25 if not many else 0.05)
        if not many:
            _label_points(ax, scores[has], "benchmark", "brain_score", "src_model")
    return _publish(fig, f"Brain score vs benchmark. Pooling: {POOLINGS.get(pooling, pooling)}",
                    pd.concat(rows, ignore_index=True), png, pdf, csv, metric=metric, pooling=pooling)


YEO7_ORDER = ["Visual", "Somatomotor", "Dorsal Attention", "Ventral Attention", "Limbic", "Frontoparietal",
              "Default"]
YEO7_COLOURS = dict(zip(YEO7_ORDER, ["#781286", "#4682b4", "#00760e", "#c43afa", "#b4a06e", "#e69422",
                                     "#cd3e4e"], strict=True))  # Yeo et al. 2011's network colours
MODALITY_COLOURS = {"vision": "tab:blue", "language": "tab:orange"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _publish(fig, title: str, out: pd.DataFrame, png: Path, pdf: Path, csv: Path, rect=None, title_kw=None,
             **columns) -> pd.DataFrame:
    """Every figure's tail: its title, the layout, PNG + PDF, and the CSV of the numbers drawn
    (``out`` with ``columns`` added, e.g. ``metric=...``). Returns that table."""
    fig.suptitle(title, fontsize=9, **(title_kw or {}))
    fig.tight_layout(**({"rect": rect} if rect else {}))
    _save(fig, Path(png), Path(pdf))
    _plt().close(fig)
    out = out.assign(**columns) if columns else out
    write_csv(out, csv)
    return out


def sigma_figure(scores: dict[str, pd.DataFrame], benchmarks: dict[str, list[str]], pooling: str,
                 png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """Pearson r and Spearman rho of brain score vs each benchmark, per kernel size (figure family 1).

    ``benchmarks``: modality -> benchmark columns to show (those with >= 3 models are drawn).
    """
    plt = _plt()
    rows = []
    for modality, per_model in scores.items():
        sigmas = sorted((c for c in per_model.columns if c.startswith("cka_")), key=lambda c: int(c[4:]))
        for bench in benchmarks[modality]:
            if bench not in per_model.columns:
                continue
            for col in sigmas:
                ok = per_model[[bench, col]].dropna()
                st = correlate(ok[bench].to_numpy(float), ok[col].to_numpy(float))
                rows.append({"modality": modality, "benchmark": bench, "sigma": int(col[4:]), "n": len(ok),
                             "pearson_r": st["pearson_r"], "pearson_p": st["pearson_p"],
                             "spearman_rho": st["spearman_rho"], "spearman_p": st["spearman_p"]})
    out = pd.DataFrame(rows, columns=["modality", "benchmark", "sigma", "n", "pearson_r", "pearson_p",
                                      "spearman_rho", "spearman_p"])
    fig, axes = plt.subplots(2, len(scores), figsize=(5.6 * len(scores), 7.2), squeeze=False, sharex=True)
    for j, modality in enumerate(scores):
        sub = out[(out["modality"] == modality) & (out["n"] >= 3)]
        for i, (stat, name) in enumerate((("pearson_r", "Pearson r"), ("spearman_rho", "Spearman ρ"))):
            ax = axes[i, j]
            for bench, g in sub.groupby("benchmark", sort=False):
                ax.plot(g["sigma"], g[stat], marker="o", ms=3, lw=1.2, label=f"{bench} (n = {g['n'].max()})")
            ax.axhline(0, color="0.6", lw=0.8)
            ax.axvline(36, color="0.6", lw=0.8, ls=":")
            ax.set_ylabel(f"{name} with benchmark")
            ax.set_title(f"{modality} models: {name}", fontsize=10)
            ax.set_ylim(-1.05, 1.05)
            if sub.empty:
                ax.text(0.5, 0.5, "fewer than 3 models with a benchmark value", transform=ax.transAxes,
                        ha="center", fontsize=9)
            else:
                ax.legend(fontsize=6, loc="lower left", ncol=2)
            if i == 1:
                ax.set_xlabel("kernel size σ of cka_σ (z-scored units)")
    return _publish(fig, f"Correlation of brain score with benchmarks by kernel size. Pooling: "
                    f"{POOLINGS.get(pooling, pooling)}", out, png, pdf, csv, pooling=pooling)


def consistency_figure(matrices: dict[str, pd.DataFrame], n_models: dict[str, int], metric: str, source: str,
                       png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """Between-subject consistency of model scores: one subjects x subjects heatmap per modality."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.2), squeeze=False)
    rows = []
    for ax, (modality, mat) in zip(axes[0], matrices.items(), strict=True):
        vals = mat.to_numpy(float)
        im = ax.imshow(vals, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(mat.columns)), mat.columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(mat.index)), mat.index, fontsize=8)
        for i in range(vals.shape[0]):
            for j in range(vals.shape[1]):
                txt = "n/a" if not np.isfinite(vals[i, j]) else f"{vals[i, j]:.2f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="white" if np.isfinite(vals[i, j]) and abs(vals[i, j]) > 0.6 else "black")
        n = n_models.get(modality)
        ax.set_title(f"{modality} ({n} models)" if n else modality, fontsize=10)
        ax.set_xlabel("subject")
        ax.set_ylabel("subject")
        fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r of model scores")
        long = mat.stack(future_stack=True).rename("pearson_r").reset_index()
        long.columns = ["subject_a", "subject_b", "pearson_r"]
        long.insert(0, "modality", modality)
        long["n_models"] = n
        rows.append(long)
    return _publish(fig, f"Between-subject consistency of per-model brain scores ({metric}; {source})",
                    pd.concat(rows, ignore_index=True), png, pdf, csv, source=source)


def metric_heatmap_figure(corrs: dict[str, pd.DataFrame], png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """27 x 27 Spearman correlation between metric variants, one heatmap per modality (family 4)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(corrs), figsize=(7.4 * len(corrs), 6.6), squeeze=False)
    rows = []
    for ax, (modality, corr) in zip(axes[0], corrs.items(), strict=True):
        cmap = _plt().get_cmap("RdBu_r").with_extremes(bad="0.8")
        vals = corr.to_numpy(float)
        im = ax.imshow(np.ma.masked_invalid(vals), vmin=-1, vmax=1, cmap=cmap)
        constant = [m for m in corr.index if not np.isfinite(corr.loc[m, m])]
        if constant:
            ax.set_xlabel(f"grey: undefined, score constant over measurements ({', '.join(constant)})", fontsize=7)
        ax.set_xticks(range(len(corr)), corr.columns, rotation=90, fontsize=7)
        ax.set_yticks(range(len(corr)), corr.index, fontsize=7)
        ax.set_title(f"{modality} models: metric variants", fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.75, label="Spearman ρ over measurements")
        long = corr.stack(future_stack=True).rename("spearman_rho").reset_index()
        long.columns = ["metric_a", "metric_b", "spearman_rho"]
        long.insert(0, "modality", modality)
        rows.append(long)
    return _publish(fig, "Spearman correlation between the metric variants over every (model, subject, layer, ROI)",
                    pd.concat(rows, ignore_index=True), png, pdf, csv)


def layer_figure(profiles: dict[str, pd.DataFrame], metric: str, png: Path, pdf: Path, csv: Path,
                 normalised: bool = False) -> pd.DataFrame:
    """Score vs relative depth (eighths) per Yeo-7 network: vision vs language, per subject (family 5);
    ``normalised``: the scores are fractions of each parcel's split-half ceiling."""
    plt = _plt()
    present = set().union(*(set(p["yeo7"].dropna()) for p in profiles.values()))
    networks = [n for n in YEO7_ORDER if n in present] + sorted(present - set(YEO7_ORDER))
    ncol = min(4, len(networks))
    nrow = -(-len(networks) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.1 * nrow), squeeze=False, sharex=True)
    for ax, net in zip(axes.flat, networks, strict=False):
        for modality, prof in profiles.items():
            sub = prof[prof["yeo7"] == net]
            colour = MODALITY_COLOURS.get(modality, "tab:gray")
            for _, g in sub.groupby("tgt_model"):
                ax.plot(g["relative_src_feature"], g["score"], color=colour, lw=0.6, alpha=0.45)
            mean = sub.groupby("relative_src_feature")["score"].mean()
            if len(mean):
                ax.plot(mean.index, mean.to_numpy(), color=colour, lw=2.2, marker="o", ms=3,
                        label=f"{modality} (mean of {sub['tgt_model'].nunique()} subjects)")
        ax.set_title(net, fontsize=10)
        ax.set_xticks(range(8))
        ax.set_xlabel("relative depth (eighths of the model)")
        ax.set_ylabel(f"{metric} / split-half ceiling" if normalised else f"{metric} (unitless)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(networks):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, frameon=False)
    scale = ", as a fraction of each ROI's split-half ceiling" if normalised else ""
    return _publish(fig, f"Layer-wise alignment by Yeo-7 network ({metric}{scale}, mean over models, layers and ROIs; "
                    "thin lines: subjects)", pd.concat([p.assign(modality=m) for m, p in profiles.items()],
                                                      ignore_index=True),
                    png, pdf, csv, rect=(0, 0, 1, 0.93), title_kw={"x": 0.02, "ha": "left"}, metric=metric)


def kernel_size_figure(changes: dict[str, pd.DataFrame], sigma_from: int, sigma_to: int, source: str,
                       png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """Per-ROI change of the z-normalised score from cka_{from} to cka_{to} and its sign consistency
    across subjects (family 6): ROIs ordered by change and coloured by Yeo-7 network (top), mean
    change per network with the share of ROIs whose sign all subjects agree on (bottom)."""
    plt = _plt()
    fig, axes = plt.subplots(2, len(changes), figsize=(6.4 * len(changes), 7.6), squeeze=False)
    for j, (modality, ch) in enumerate(changes.items()):
        ax = axes[0, j]
        d = ch.sort_values("norm_mean").reset_index(drop=True)
        colours = [YEO7_COLOURS.get(y, "0.5") for y in d["yeo7"]]
        alpha = np.where(d["norm_sign_consistency"] >= 1, 1.0, 0.35)
        ax.bar(np.arange(len(d)), d["norm_mean"], color=colours, width=0.85)
        for k, a in enumerate(alpha):
            ax.patches[k].set_alpha(float(a))
        ax.axhline(0, color="0.3", lw=0.8)
        if len(d) <= 30:
            ax.set_xticks(np.arange(len(d)), d["tgt_feature"], rotation=90, fontsize=7)
        else:
            ax.set_xticks([])
        ax.set_xlabel(f"HCP-MMP1 ROI ({len(d)}), ordered by change")
        ax.set_ylabel(f"Δ z-normalised score, σ {sigma_from} → {sigma_to}")
        ax.set_title(f"{modality} models (faded: subjects disagree on the sign)", fontsize=10)
        from matplotlib.patches import Patch

        nets = [n for n in YEO7_ORDER if n in set(d["yeo7"])]
        ax.legend([Patch(color=YEO7_COLOURS[n]) for n in nets], nets, fontsize=7, loc="best")
        ax2 = axes[1, j]
        by = ch.groupby("yeo7").agg(mean=("norm_mean", "mean"), sd=("norm_mean", "std"), n=("norm_mean", "size"),
                                    consistent=("norm_sign_consistency", lambda s: float((s >= 1).mean())))
        by = by.reindex([n for n in YEO7_ORDER if n in by.index])
        labels = [f"{net}\n{int(r['n'])} ROIs, {100 * r['consistent']:.0f}% sign-consistent"
                  for net, r in by.iterrows()]
        ax2.barh(labels, by["mean"], xerr=by["sd"].fillna(0), color=[YEO7_COLOURS[n] for n in by.index],
                 capsize=3)
        ax2.tick_params(axis="y", labelsize=7)
        ax2.axvline(0, color="0.3", lw=0.8)
        ax2.invert_yaxis()
        ax2.set_xlabel("mean Δ z-normalised score per network (± SD over ROIs)")
    return _publish(fig, f"Kernel size: change from cka_{sigma_from} to cka_{sigma_to} ({source})",
                    pd.concat([c.assign(modality=m) for m, c in changes.items()], ignore_index=True), png, pdf, csv,
                    sigma_from=sigma_from, sigma_to=sigma_to, source=source)


def umap_figure(layers: pd.DataFrame, rois: pd.DataFrame, metric: str, png: Path, pdf: Path,
                csv: Path) -> pd.DataFrame:
    """UMAP of model layers (by their ROI profile) and of ROIs (by their layer profile) (family 8)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11.5, 4.8))
    markers = {"vision": "o", "language": "^"}
    for modality, g in layers.groupby("modality"):
        sc = a1.scatter(g["umap_1"], g["umap_2"], c=g["relative_src_feature"], cmap="viridis", vmin=0, vmax=7,
                        marker=markers.get(modality, "s"), s=22, edgecolors="0.2", linewidths=0.3,
                        label=f"{modality} layers ({len(g)})")
    fig.colorbar(sc, ax=a1, label="relative depth (eighths)")
    a1.legend(fontsize=8)
    a1.set_title(f"model layers by their {rois.shape[0]}-ROI profile (n_neighbors = {layers['n_neighbors'].iloc[0]})",
                 fontsize=9)
    for net, g in rois.groupby("yeo7"):
        a2.scatter(g["umap_1"], g["umap_2"], color=YEO7_COLOURS.get(net, "0.5"), s=28, label=net,
                   edgecolors="0.2", linewidths=0.3)
    if len(rois) <= 40:
        for _, r in rois.iterrows():
            a2.annotate(str(r["tgt_feature"]), (r["umap_1"], r["umap_2"]), fontsize=7, xytext=(3, 2),
                        textcoords="offset points")
    a2.legend(fontsize=7, loc="best")
    a2.set_title(f"ROIs by their {len(layers)}-layer profile (n_neighbors = {rois['n_neighbors'].iloc[0]})",
                 fontsize=9)
    for ax in (a1, a2):
        ax.set_xlabel("UMAP 1 (a.u.)")
        ax.set_ylabel("UMAP 2 (a.u.)")
    return _publish(fig, f"UMAP (cosine, min_dist 1) of {metric} profiles, mean over subjects",
                    pd.concat([layers.assign(kind="layer"), rois.assign(kind="roi")], ignore_index=True), png, pdf,
                    csv, metric=metric)


def trajectory_figure(traj: pd.DataFrame, metric: str, png: Path, pdf: Path, csv: Path,
                      leadlag: pd.DataFrame | None = None) -> pd.DataFrame:
    """Brain score (with 95% CI) and task performance vs training progress, one panel per run (family 9).

    ``traj`` is :func:`brainalign.analysis.reference.trajectory`'s table plus ``x_label`` and
    ``performance_label`` per row. Both curves are also shown as a fraction of their final value
    (the paper's point: alignment rises before performance), in the CSV as ``*_rel``. With
    ``leadlag`` (``results/stats/trajectory_leadlag.csv``) a second row of panels shows each curve
    as the fraction of its final gain, with the times to 50% and 90% of it (brain: bootstrap 95% CI).
    """
    plt = _plt()
    runs = list(dict.fromkeys(traj["run"]))
    rows = 2 if leadlag is not None else 1
    fig, axes = plt.subplots(rows, len(runs), figsize=(5.6 * len(runs), 4.2 * rows), squeeze=False)
    parts = []
    for col, (ax, run) in enumerate(zip(axes[0], runs, strict=True)):
        g = traj[traj["run"] == run].sort_values("step").copy()
        x = g["tokens"] if g["tokens"].notna().all() else g["step"]
        xlabel = "training tokens" if g["tokens"].notna().all() else g["x_label"].iloc[0]
        ax.fill_between(x, g["ci_low"], g["ci_high"], color="tab:blue", alpha=0.2, lw=0)
        ax.plot(x, g["brain_score"], color="tab:blue", marker="o", ms=4, label=f"brain score ({metric})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"brain score ({metric}, unitless; 95% CI)", color="tab:blue")
        g["brain_score_rel"] = g["brain_score"] / g["brain_score"].iloc[-1]
        if g["performance"].notna().any():
            ax2 = ax.twinx()
            ax2.plot(x, g["performance"], color="tab:red", marker="s", ms=4, label=g["performance_label"].iloc[0])
            ax2.set_ylabel(g["performance_label"].iloc[0], color="tab:red")
            g["performance_rel"] = g["performance"] / g["performance"].iloc[-1]
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
        else:
            g["performance_rel"] = np.nan
            ax.legend(fontsize=7, loc="lower right")
            ax.text(0.02, 0.98, "no benchmark values for these checkpoints", transform=ax.transAxes, va="top",
                    fontsize=7)
        if xlabel == "training tokens":
            ax.set_xscale("symlog", linthresh=max(float(x[x > 0].min()), 1.0) if (x > 0).any() else 1.0)
        ax.set_title(str(run), fontsize=10)
        if leadlag is not None:
            _leadlag_panel(axes[1][col], g, x, xlabel, leadlag[leadlag["run"].astype(str) == str(run)])
        parts.append(g)
    return _publish(fig, "Training trajectories: brain score (max over ROIs, mean over subjects and layers) and "
                    "task performance", pd.concat(parts, ignore_index=True), png, pdf, csv, metric=metric)


def _leadlag_panel(ax, g: pd.DataFrame, x, xlabel: str, ll: pd.DataFrame) -> None:
    """Fraction of the final gain of brain score and performance, with the lead-lag crossing times."""
    x = np.asarray(x, dtype=float)
    for col, colour, label in (("brain_score", "tab:blue", "brain score"), ("performance", "tab:red", "performance")):
        y = g[col].to_numpy(float)
        if not np.isfinite(y).all() or y[-1] == y[0]:
            continue
        ax.plot(x, (y - y[0]) / (y[-1] - y[0]), color=colour, marker="o", ms=3, label=label)
    est = ll.set_index("statistic") if len(ll) else pd.DataFrame()
    for f in (0.5, 0.9):
        ax.axhline(f, color="0.6", lw=0.6, ls=":")
        for who, colour in (("brain", "tab:blue"), ("performance", "tab:red")):
            key = f"{who}_t{round(100 * f)}"
            if key in est.index and np.isfinite(est.loc[key, "estimate"]):
                r = est.loc[key]
                err = None
                if np.isfinite(r["ci_low"]):
                    err = [[r["estimate"] - r["ci_low"]], [r["ci_high"] - r["estimate"]]]
                ax.errorbar([r["estimate"]], [f], xerr=err, color=colour, marker="|", ms=10, capsize=3, lw=1.2)
    text = []
    for f in (0.5, 0.9):
        key = f"lead_t{round(100 * f)}"
        if key in est.index and np.isfinite(est.loc[key, "estimate"]):
            r = est.loc[key]
            text.append(f"lead to {round(100 * f)}%: {r['estimate']:.3g} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]")
    if "xcorr_lag+0" in est.index and np.isfinite(est.loc["xcorr_lag+0", "estimate"]):
        text.append(f"corr of changes (lag 0): {est.loc['xcorr_lag+0', 'estimate']:.2f}")
    if not text:
        text.append("no performance values: brain crossing times only")
    ax.text(0.02, 0.98, "\n".join(text), transform=ax.transAxes, va="top", fontsize=7)
    if xlabel == "training tokens":
        ax.set_xscale("symlog", linthresh=max(float(x[x > 0].min()), 1.0) if (x > 0).any() else 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of the final gain")
    ax.legend(fontsize=7, loc="lower right")


ROBUSTNESS_INTERVALS = [  # (label, estimate column, low column, high column, colour)
    ("paper: Pearson r, Fisher-z CI", "pearson_r", "paper_pearson_ci_low", "paper_pearson_ci_high", "0.35"),
    ("bootstrap over models", "pearson_r", "bootstrap_ci_low", "bootstrap_ci_high", "tab:blue"),
    ("cluster bootstrap over families", "pearson_r", "cluster_bootstrap_ci_low", "cluster_bootstrap_ci_high",
     "tab:red"),
    ("r of family means, Fisher-z CI", "family_mean_r", "family_mean_ci_low", "family_mean_ci_high", "tab:purple"),
    ("Spearman ρ, Bonett-Wright CI", "spearman_rho", "spearman_bw_ci_low", "spearman_bw_ci_high", "tab:green"),
]


def robustness_figure(table: pd.DataFrame, png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """Forest plot of ``results/stats/robustness_sigma{S}.csv``: per modality and benchmark, r with
    each interval (paper's, bootstrap, family cluster bootstrap, family means, Spearman) and the
    partial r controlling for log(parameters) as a diamond."""
    plt = _plt()
    table = table[~table["benchmark"].astype(str).str.startswith("#")].reset_index(drop=True)
    modalities = list(dict.fromkeys(table["modality"]))
    heights = [max(1, int((table["modality"] == m).sum())) for m in modalities]
    fig, axes = plt.subplots(len(modalities), 1, figsize=(7.5, 1.2 + 0.62 * sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, sharex=True)
    offsets = np.linspace(0.3, -0.3, len(ROBUSTNESS_INTERVALS) + 1)
    for ax, modality in zip(axes[:, 0], modalities, strict=True):
        sub = table[table["modality"] == modality].reset_index(drop=True)
        for i, row in sub.iterrows():
            y = len(sub) - 1 - i
            for k, (label, est, lo, hi, colour) in enumerate(ROBUSTNESS_INTERVALS):
                if np.isfinite(row[est]):
                    ax.errorbar(row[est], y + offsets[k], xerr=[[row[est] - row[lo]], [row[hi] - row[est]]],
                                fmt="o", ms=3, color=colour, lw=1.2, capsize=2, label=label if i == 0 else None)
            if np.isfinite(row["partial_r_log_params"]):
                ax.plot(row["partial_r_log_params"], y + offsets[-1], "D", ms=4, color="tab:orange",
                        label="partial r | log(parameters)" if i == 0 else None)
        ax.set_yticks(range(len(sub)))
        ax.set_yticklabels([f"{b} (n = {n}, {f} families)" for b, n, f in
                            zip(sub["benchmark"][::-1], sub["n_models"][::-1], sub["n_families"][::-1], strict=True)],
                           fontsize=7)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_title(f"{modality} models", fontsize=10)
    axes[0, 0].legend(fontsize=6, loc="lower left")
    axes[-1, 0].set_xlabel("correlation of brain score with benchmark (95% intervals)")
    sigma = table["kernel_size"].iloc[0] if len(table) else ""
    return _publish(fig, f"How robust is brain score vs benchmark? cka_{sigma}", table, png, pdf, csv)


FAMILY_COLOURS = {"cka": "tab:blue", "cknna": "tab:cyan", "mutual_knn": "tab:green", "cycle_knn": "tab:olive",
                  "linear_cka": "tab:purple", "rsa": "tab:red", "ridge": "tab:orange"}


def headline_by_metric_figure(table: pd.DataFrame, headline: str, png: Path, pdf: Path, csv: Path) -> pd.DataFrame:
    """Forest plot of ``results/stats/headline_by_metric.csv``: per modality (panels) and metric
    variant (rows, coloured by family), the Pearson r of brain score with the headline benchmark, its
    bootstrap interval over models (thick) and cluster-bootstrap interval over families (thin), and
    the partial r given log(parameters) (diamond); the headline metric's r as a dashed line."""
    plt = _plt()
    modalities = list(dict.fromkeys(table["modality"])) or ["(no models)"]
    heights = [max(1, int((table["modality"] == m).sum())) for m in modalities]
    fig, axes = plt.subplots(1, len(modalities), figsize=(4.2 * len(modalities), 1.4 + 0.22 * max(heights)),
                             squeeze=False, sharex=True)
    for ax, modality in zip(axes[0], modalities, strict=True):
        sub = table[table["modality"] == modality].reset_index(drop=True)
        ys = np.arange(len(sub))[::-1]
        for y, (_, row) in zip(ys, sub.iterrows(), strict=True):
            colour = FAMILY_COLOURS.get(row["family"], "0.3")
            r = row["pearson_r"]
            if not np.isfinite(r):
                continue
            for lo, hi, lw in (("cluster_bootstrap_ci_low", "cluster_bootstrap_ci_high", 0.8),
                               ("bootstrap_ci_low", "bootstrap_ci_high", 2.2)):
                if np.isfinite(row[lo]) and np.isfinite(row[hi]):
                    ax.plot([row[lo], row[hi]], [y, y], color=colour, lw=lw, alpha=0.8)
            ax.plot(r, y, "o", ms=4, color=colour)
            if np.isfinite(row.get("partial_r_log_params", np.nan)):
                ax.plot(row["partial_r_log_params"], y, "D", ms=3, mfc="none", color=colour)
        head = sub[sub["metric"] == headline]
        if len(head) and np.isfinite(head["pearson_r"].iloc[0]):
            ax.axvline(head["pearson_r"].iloc[0], color="0.3", ls="--", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels(sub["metric"], fontsize=6)
        for tick, fam in zip(ax.get_yticklabels(), sub["family"], strict=True):
            tick.set_color(FAMILY_COLOURS.get(fam, "0.3"))
        ax.set_xlim(-1.05, 1.05)
        n = int(sub["n_models"].max()) if len(sub) else 0
        bench = sub["benchmark"].iloc[0] if len(sub) else ""
        ax.set_title(f"{modality}: r with {bench} (n = {n})", fontsize=9)
        ax.set_xlabel("Pearson r (95% bootstrap / family-cluster intervals)", fontsize=7)
    return _publish(fig, f"Brain score vs benchmark under every metric (dashed: {headline})", table, png, pdf, csv)


def convergence_figure(models: pd.DataFrame, pairs: pd.DataFrame, metric: str, pooling: str, png: Path, pdf: Path,
                       csv: Path) -> pd.DataFrame:
    """Model-to-model convergence (family ``convergence``): one row per modality, each model's convergence
    (the mean of its pooled alignment with the other modality's models, ``metric``) against its benchmark
    and against its brain score; the right column shows the cross-modal pair matrix.

    ``models``: ``results/stats/convergence/models.csv``; ``pairs``: ``.../pairs.csv``."""
    plt = _plt()
    data = models[models["metric"] == metric].copy()
    if data.empty:
        raise InputError(f"no convergence scores for metric {metric!r} (config key 'convergence: metric' must be "
                         "one of 'convergence: metrics')")
    modalities = [m for m in ("vision", "language") if (data["modality"] == m).any()]
    cross = pairs[(pairs["metric"] == metric) & pairs["kind"].isin(["language_vision", "vision_language"])]
    ncols = 2 + (not cross.empty)
    fig = plt.figure(figsize=(4.6 * ncols, 4.0 * len(modalities)))
    grid = fig.add_gridspec(len(modalities), ncols)
    brain_metric = str(data["brain_metric"].iloc[0]) if "brain_metric" in data else "brain score"
    for row, modality in enumerate(modalities):
        d = data[data["modality"] == modality]
        for col, (x, label) in enumerate((("benchmark", str(d["benchmark_name"].iloc[0])),
                                          ("brain_score", f"brain score ({brain_metric}, unitless)"))):
            ax = fig.add_subplot(grid[row, col])
            has = d[x].notna() & d["convergence"].notna()
            n = int(has.sum())
            ax.set_title(f"{modality} models", fontsize=10)
            ax.set_ylabel(f"convergence ({metric})")
            ax.set_xlabel(label)
            if n == 0:
                ax.text(0.5, 0.5, f"no {label} value for these models", transform=ax.transAxes, ha="center",
                        va="center", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.scatter(d.loc[has, x], d.loc[has, "convergence"], s=30, color=MODALITY_COLOURS[modality], zorder=3)
            if n >= 3 and d.loc[has, x].nunique() > 1:
                r = float(np.corrcoef(d.loc[has, x], d.loc[has, "convergence"])[0, 1])
                stat = f"Pearson r = {r:.2f} (n = {n})"
            else:
                stat = f"n = {n} (r needs >= 3)"
            ax.text(0.02, 0.98, stat, transform=ax.transAxes, va="top", fontsize=8)
            ax.margins(x=0.3 if n <= 25 else 0.05, y=0.2)
            if n <= 25:
                _label_points(ax, d[has], x, "convergence", "model")
    if not cross.empty:
        ax = fig.add_subplot(grid[:, 2])
        mat = cross.pivot_table(index="src_model", columns="tgt_model", values="score", aggfunc="mean")
        im = ax.imshow(mat.to_numpy(float), cmap="viridis", aspect="auto")
        if mat.shape[0] <= 40:
            ax.set_yticks(range(mat.shape[0]), mat.index, fontsize=6)
        if mat.shape[1] <= 40:
            ax.set_xticks(range(mat.shape[1]), mat.columns, fontsize=6, rotation=90)
        kind = cross["kind"].iloc[0].split("_")
        ax.set_ylabel(f"{kind[0]} model")
        ax.set_xlabel(f"{kind[1]} model")
        ax.set_title("model pairs", fontsize=10)
        fig.colorbar(im, ax=ax, label=f"{metric}, {pooling} over layer pairs", shrink=0.8)
    out = data.assign(pooling=pooling)
    return _publish(fig, f"Model-to-model convergence: {metric}, {pooling} over layer pairs, the mean over the "
                    "other modality's models", out, png, pdf, csv)
