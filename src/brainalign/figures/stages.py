"""Figure rules as plain functions: ``FAMILIES[name](inputs, outputs, params)``.

``scripts/figure.py`` (the entry point of every ``figure_*`` rule) passes the rule's named
inputs, outputs and params; each function reads its inputs, computes the numbers out of core
with :mod:`brainalign.analysis.tables` (the same numbers as :mod:`brainalign.analysis.reference` on a table in
memory) and draws them with :mod:`brainalign.figures.panels` (PNG, PDF and the CSV of the numbers,
written atomically). Table inputs are named by modality (``vision``, ``language``) with their
check reports (``vision_check`` ...). In precomputed mode (``scores_from: paper``) the inputs are
the paper's own tables shipped in ``brainalign/resources``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.analysis import reference as analysis
from brainalign.analysis import tables
from brainalign.figures import panels as figures
from brainalign.io import InputError, write_csv

#: Subject names of the paper's published tables (S01 = subj01, ...).
PAPER_SUBJECTS = {"S01": "subj01", "S02": "subj02", "S05": "subj05", "S07": "subj07"}


def _tables(inputs: dict) -> dict[str, str]:
    """The measurement tables among a rule's named inputs, by modality."""
    return {mod: inputs[mod] for mod in ("vision", "language") if mod in inputs}


def _info(inputs: dict, name: str, con) -> tables.TableInfo:
    """A table's check report (the rule's ``{name}_check`` input), or a fresh check."""
    check = inputs.get(f"{name}_check")
    return tables.TableInfo.from_json(check) if check else tables.check_table(inputs[name], con)


def _require(info: tables.TableInfo, metrics: list[str]) -> None:
    missing = [m for m in metrics if m not in info.metrics]
    if missing:
        raise InputError(f"{info.path}: no rows for metrics {missing} (add them to the config's metrics)")


def _paths(outputs: dict) -> tuple[Path, Path, Path]:
    return Path(outputs["png"]), Path(outputs["pdf"]), Path(outputs["csv"])


def performance(inputs: dict, outputs: dict, params: dict) -> None:
    scores = {Path(f).stem.rsplit("_", 1)[1]: pd.read_csv(f) for f in inputs["scores"]}
    pooling = str(next(iter(scores.values()))["pooling"].iloc[0])
    figures.performance_figure(scores, params["benchmarks"], params["metric"], pooling, *_paths(outputs))


def performance_sigma(inputs: dict, outputs: dict, params: dict) -> None:
    from brainalign.resources import LANGUAGE_BENCHMARK_COLUMNS, VISION_BENCHMARK_COLUMNS

    scores = {Path(f).stem.rsplit("_", 1)[1]: pd.read_csv(f) for f in inputs["scores"]}
    pooling = str(next(iter(scores.values()))["pooling"].iloc[0])
    benches = {"vision": [c for c in VISION_BENCHMARK_COLUMNS if not c.startswith("#")],
               "language": [c for c in LANGUAGE_BENCHMARK_COLUMNS if not c.startswith("#")]}
    figures.sigma_figure(scores, {m: benches[m] for m in scores}, pooling, *_paths(outputs))


def consistency(inputs: dict, outputs: dict, params: dict) -> None:
    metric, pooling = params["metric"], params["pooling"]
    if params.get("scores_from") == "paper":
        from brainalign.resources import paper_subject_consistency

        mats = {mod: paper_subject_consistency(mod).rename(index=PAPER_SUBJECTS, columns=PAPER_SUBJECTS)
                for mod in ("vision", "language")}
        figures.consistency_figure(mats, {"vision": 594, "language": 36}, "cka_36",
                                   "the paper's published matrices", *_paths(outputs))
        return
    con = tables.connect()
    mats, n = {}, {}
    for mod, path in _tables(inputs).items():
        _require(_info(inputs, mod, con), [metric])
        per_subject = tables.subject_scores(tables.layer_scores(path, [metric], con), metric, pooling)
        mats[mod], n[mod] = analysis.consistency_matrix(per_subject), len(per_subject)
    figures.consistency_figure(mats, n, metric, f"measured; {analysis.POOLINGS[pooling]}", *_paths(outputs))


def metrics(inputs: dict, outputs: dict, params: dict) -> None:
    con = tables.connect()
    corrs = {mod: tables.metric_correlation(path, _info(inputs, mod, con), con=con)
             for mod, path in _tables(inputs).items()}
    figures.metric_heatmap_figure(corrs, *_paths(outputs))


def layers(inputs: dict, outputs: dict, params: dict) -> None:
    """Layer profiles (family 5); with ``params['normalise_layers']`` each score as a fraction of its
    (subject, parcel) split-half ceiling (``inputs['ceilings']``, reliable ceilings only)."""
    metric = params["metric"]
    con = tables.connect()
    ceilings = None
    if params.get("normalise_layers"):
        ceilings = reliable_ceilings(inputs["ceilings"])
    profiles = {}
    for mod, path in _tables(inputs).items():
        _require(_info(inputs, mod, con), [metric])
        profiles[mod] = tables.depth_profiles(path, metric, con, ceilings)
    figures.layer_figure(profiles, metric, *_paths(outputs), normalised=ceilings is not None)


# a parcel's split-half ceiling is used where its split-half score beats this share of the shuffles
CEILING_P = 0.1


def reliable_ceilings(paths) -> pd.DataFrame:
    """The split-half ceilings of several subjects (:func:`brainalign.alignment.ceiling.read_ceilings`), NaN
    where the parcel's split-half score is not above chance (``p_split_half > CEILING_P``)."""
    from brainalign.alignment.ceiling import read_ceilings

    df = read_ceilings(paths)
    df["reliable"] = df["p_split_half"] <= CEILING_P
    df["ceiling"] = df["ceiling"].where(df["reliable"] & (df["ceiling"] > 0))
    return df


def roi_score_table(inputs: dict, out: Path, params: dict) -> None:
    """``results/stats/roi_scores_{modality}.csv``: per (subject, parcel) the headline metric's
    per-ROI score (:func:`brainalign.analysis.tables.roi_scores`: mean over models of the best layer), its
    split-half ceiling and the ceiling-normalised score ``score / ceiling`` (NaN where the ceiling is
    not above chance), NSD's noise ceiling (percent of variance) where the release has ncsnr."""
    from brainalign.io import write_csv

    metric = params["metric"]
    con = tables.connect()
    _require(_info({"table": inputs["table"], "table_check": inputs["check"]}, "table", con), [metric])
    rois = tables.roi_scores(inputs["table"], [metric], con)
    ceil = reliable_ceilings(inputs["ceilings"]).drop(columns="metric")
    rois = rois.merge(ceil, on=["tgt_model", "tgt_feature"], how="left")
    rois["normalised_score"] = rois["score"] / rois["ceiling"]
    nsd = inputs.get("nsd_ceilings") or []
    if len(nsd):
        nc = pd.concat([pd.read_csv(f) for f in nsd], ignore_index=True)
        nc = nc.rename(columns={"subject": "tgt_model", "roi": "tgt_feature"})[["tgt_model", "tgt_feature",
                                                                                "noise_ceiling"]]
        rois = rois.merge(nc, on=["tgt_model", "tgt_feature"], how="left")
    write_csv(rois, out)


def roi_tables(inputs: dict, params: dict, metrics: list[str]) -> tuple[dict[str, pd.DataFrame], str]:
    """Per-ROI scores per modality: measured (:func:`analysis.roi_scores`) or the paper's own."""
    if params.get("scores_from") == "paper":
        from brainalign.resources import paper_roi_scores

        out = {}
        for mod in ("vision", "language"):
            df = paper_roi_scores(mod)
            df = df[df["metric"].isin(metrics)].copy()
            df["tgt_model"] = df["tgt_model"].map(PAPER_SUBJECTS).fillna(df["tgt_model"])
            out[mod] = df
        return out, "the paper's published per-ROI scores"
    con = tables.connect()
    out = {}
    for mod, path in _tables(inputs).items():
        _require(_info(inputs, mod, con), metrics)
        out[mod] = tables.roi_scores(path, metrics, con)
    return out, f"measured; per ROI: {analysis.ROI_POOLING}"


def kernel_size(inputs: dict, outputs: dict, params: dict) -> None:
    a, b = params["sigma_from"], params["sigma_to"]
    if params.get("scores_from") == "paper":
        from brainalign.resources import paper_kernel_size

        if (a, b) != (28, 68):
            raise InputError(f"config analysis.kernel_size: the paper published sigma 28 -> 68 only, not {a} -> {b}")
        changes = {}
        for mod in ("vision", "language"):
            ch = paper_kernel_size(mod).copy()
            ch["deviation"] = ch["norm_mean"] - ch["norm_mean"].mean()
            changes[mod] = ch
        figures.kernel_size_figure(changes, a, b, "the paper's published per-ROI changes", *_paths(outputs))
        return
    rois, source = roi_tables(inputs, params, [f"cka_{a}", f"cka_{b}"])
    changes = {mod: analysis.kernel_size_change(r, a, b) for mod, r in rois.items()}
    figures.kernel_size_figure(changes, a, b, source, *_paths(outputs))


def umap(inputs: dict, outputs: dict, params: dict) -> None:
    metric = params["metric"]
    con = tables.connect()
    paths = _tables(inputs)
    infos = {mod: _info(inputs, mod, con) for mod in paths}
    for info in infos.values():
        _require(info, [metric])
    profiles = tables.profile_matrix(list(paths.values()), metric, con)
    modality = {m: mod for mod, info in infos.items() for m in info.models}
    layer_xy = analysis.umap_embedding(profiles, seed=params.get("seed", 0))
    layer_xy.insert(0, "modality", layer_xy["src_model"].map(modality))
    roi_xy = analysis.umap_embedding(profiles.T, seed=params.get("seed", 0))
    yeo = tables.roi_networks(next(iter(paths.values())), con)
    roi_xy.insert(1, "yeo7", roi_xy["tgt_feature"].map(yeo))
    figures.umap_figure(layer_xy, roi_xy, metric, *_paths(outputs))


def brain_map(inputs: dict, outputs: dict, params: dict) -> None:
    """Per-ROI values of one modality on fsaverage5 (family 7): the headline metric's per-ROI score
    (``kind: score``) or the kernel-size change of the z-normalised score (``kind: change``)."""
    from brainalign.figures.brainmap import load_atlas, plot_brain_map
    from brainalign.io import write_csv

    modality, kind, metric = params["modality"], params["kind"], params["metric"]
    a, b = params["sigma_from"], params["sigma_to"]
    atlas = load_atlas(inputs["lh"], inputs["rh"], inputs["ctab"])
    if kind == "change":
        if params.get("scores_from") == "paper":
            from brainalign.resources import paper_kernel_size

            ch = paper_kernel_size(modality)
            source = "the paper's published per-ROI changes"
        else:
            rois, source = roi_tables({modality: inputs["table"], f"{modality}_check": inputs["check"]}, params,
                                      [f"cka_{a}", f"cka_{b}"])
            ch = analysis.kernel_size_change(rois[modality], a, b)
        values = ch.set_index("tgt_feature")["norm_mean"]
        title = f"{modality} models: change of z-normalised score, cka_{a} -> cka_{b}\n({source})"
        label, cmap, symmetric = "Δ z-normalised score (mean over subjects)", "RdBu_r", True
        table = ch.assign(value=ch["norm_mean"])
    elif kind == "normalised":
        per = pd.read_csv(inputs["scores"])
        table = (per.groupby(["tgt_feature", "yeo7"], dropna=False)
                 .agg(value=("normalised_score", "mean"), score=("score", "mean"), ceiling=("ceiling", "mean"),
                      n_subjects=("normalised_score", "count")).reset_index())
        values = table.set_index("tgt_feature")["value"].dropna()
        title = (f"{modality} models: {metric} per ROI as a fraction of its split-half ceiling\n"
                 "(mean over subjects; blank: no ceiling above chance)")
        label, cmap, symmetric = f"{metric} / ceiling", "viridis", False
    else:
        rois, source = roi_tables({modality: inputs.get("table"), f"{modality}_check": inputs.get("check")}, params,
                                  [metric])
        per_roi = rois[modality].groupby(["tgt_feature", "yeo7"], observed=True)["score"].mean()
        table = per_roi.rename("value").reset_index()
        values = table.set_index("tgt_feature")["value"]
        title = f"{modality} models: {metric} per ROI, mean over subjects\n({source})"
        label, cmap, symmetric = f"{metric} (unitless)", "viridis", False
    known = set(atlas.names.values())
    shown = {str(k): float(v) for k, v in values.items() if str(k) in known}
    plot_brain_map(shown, atlas, Path(outputs["png"]), Path(outputs["pdf"]), title, label, cmap, symmetric)
    table = table.assign(modality=modality, kind=kind, on_atlas=table["tgt_feature"].astype(str).isin(known))
    write_csv(table, outputs["csv"])


def ceiling_map(inputs: dict, outputs: dict, params: dict) -> None:
    """NSD's per-parcel noise ceiling (``results/stats/noise_ceiling/{split}/*.csv``), mean over
    subjects, on fsaverage5 (family 7, ``noise_ceiling``)."""
    from brainalign.figures.brainmap import load_atlas, plot_brain_map

    atlas = load_atlas(inputs["lh"], inputs["rh"], inputs["ctab"])
    ceilings = pd.concat([pd.read_csv(f) for f in inputs["ceilings"]], ignore_index=True)
    table = (ceilings.groupby("roi", sort=False)
             .agg(value=("noise_ceiling", "mean"), sd=("noise_ceiling", "std"), n_subjects=("subject", "nunique"),
                  n_valid=("n_valid", "sum"))
             .reset_index().rename(columns={"roi": "tgt_feature"}))
    known = set(atlas.names.values())
    shown = {str(k): float(v) for k, v in table.set_index("tgt_feature")["value"].items()
             if str(k) in known and np.isfinite(v)}
    n = int(table["n_subjects"].max()) if len(table) else 0
    plot_brain_map(shown, atlas, Path(outputs["png"]), Path(outputs["pdf"]),
                   f"Noise ceiling per ROI (NSD's ncsnr, for the repeats averaged), mean over {n} subjects",
                   "noise ceiling (% of variance explainable)", "magma", False)
    table = table.assign(kind="noise_ceiling", on_atlas=table["tgt_feature"].astype(str).isin(known))
    write_csv(table, outputs["csv"])


def checkpoint_layers(inputs: dict, params: dict, con) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The checkpoint models of the trajectory figure and lead-lag table, with their performance,
    and their per (subject, layer) brain scores (:func:`brainalign.analysis.tables.layer_scores` of the
    headline metric).

    Measured runs: ``params['checkpoints']`` has one dict per checkpoint model of the config
    (``src_model, run, step, tokens, x_label, summary``); ``summary`` is the run's timm
    ``summary.csv`` (``epoch, eval_top1``), whose held-out top-1 is the run's performance, or None.
    Tables mode: the inputs are checkpoint tables (``{modality}_trained``), whose models' runs and
    steps :func:`brainalign.analysis.tables.checkpoint_info` finds (no performance).
    """
    metric = params["metric"]
    trained = {k: v for k, v in inputs.items() if k.endswith("_trained") and not k.endswith("_check")}
    cks, layers = [], []
    if trained:
        for name, path in trained.items():
            _require(_info(inputs, name, con), [metric])
            ck = tables.checkpoint_info(path, params.get("registries", []), con)
            ck["performance"], ck["performance_label"] = float("nan"), ""
            cks.append(ck)
            layers.append(tables.layer_scores(path, [metric], con, models=list(ck["src_model"])))
    else:
        ck = pd.DataFrame(params["checkpoints"])
        ck["performance"] = float("nan")
        ck["performance_label"] = ""
        for summary, idx in ck.groupby("summary", dropna=True).groups.items():
            table = pd.read_csv(summary)
            if not {"epoch", "eval_top1"} <= set(table.columns):
                raise InputError(f"{summary}: needs timm's summary.csv columns epoch, eval_top1")
            top1 = table.set_index("epoch")["eval_top1"]
            ck.loc[idx, "performance"] = ck.loc[idx, "step"].map(top1).to_numpy(float)
            ck.loc[idx, "performance_label"] = "held-out top-1 of the training task (%)"
        for mod, path in _tables(inputs).items():
            mine = ck[ck["src_model"].isin(set(_info(inputs, mod, con).models))]
            if len(mine):
                cks.append(mine)
                layers.append(tables.layer_scores(path, [metric], con, models=list(mine["src_model"])))
    layers = pd.concat(layers, ignore_index=True) if layers else pd.DataFrame()
    if layers.empty:
        names = list(pd.concat(cks)["src_model"]) if cks else list(pd.DataFrame(params.get("checkpoints", []))
                                                                     .get("src_model", []))
        raise InputError(f"no {metric} rows for the checkpoint models {names[:3]} ...")
    return pd.concat(cks, ignore_index=True), layers


def trajectories(inputs: dict, outputs: dict, params: dict) -> None:
    """Training trajectories (family 9), one panel per run (:func:`checkpoint_layers`), with the
    lead-lag panel below each when the rule has the ``leadlag`` table."""
    con = tables.connect()
    ck, layers = checkpoint_layers(inputs, params, con)
    traj = tables.trajectory_from_layers(layers, ck).sort_values(["run", "step"]).reset_index(drop=True)
    leadlag = pd.read_csv(inputs["leadlag"]) if inputs.get("leadlag") else None
    figures.trajectory_figure(traj, params["metric"], *_paths(outputs), leadlag=leadlag)


def leadlag_table(inputs: dict, out: Path, params: dict) -> None:
    """``results/stats/trajectory_leadlag.csv`` (:func:`brainalign.analysis.leadlag.run_lead_lag`)."""
    from brainalign.analysis.leadlag import run_lead_lag

    ck, layers = checkpoint_layers(inputs, params, tables.connect())
    table = run_lead_lag(layers, ck, params["metric"], int(params["resamples"]), int(params["seed"]))
    write_csv(table, out)


def robustness(inputs: dict, outputs: dict, params: dict) -> None:
    figures.robustness_figure(pd.read_csv(inputs["robustness"]), *_paths(outputs))


def headline_by_metric(inputs: dict, outputs: dict, params: dict) -> None:
    figures.headline_by_metric_figure(pd.read_csv(inputs["table"]), params["metric"], *_paths(outputs))


def convergence(inputs: dict, outputs: dict, params: dict) -> None:
    """Model-to-model convergence (family ``convergence``) from ``results/stats/convergence/``."""
    figures.convergence_figure(pd.read_csv(inputs["models"]), pd.read_csv(inputs["pairs"]), params["metric"],
                               params["pooling"], *_paths(outputs))


FAMILIES: dict[str, Callable[[dict, dict, dict], None]] = {
    "performance": performance,
    "performance_sigma": performance_sigma,
    "consistency": consistency,
    "metrics": metrics,
    "layers": layers,
    "kernel_size": kernel_size,
    "umap": umap,
    "brain_map": brain_map,
    "trajectories": trajectories,
    "robustness": robustness,
    "headline_by_metric": headline_by_metric,
    "ceiling_map": ceiling_map,
    "convergence": convergence,
}
