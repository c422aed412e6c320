"""The workflow's stages as plain functions: each reads files, writes one output atomically.

``scripts/*.py`` (the Snakemake rule entry points) call these with the rule's
inputs, outputs and params; users can call them directly too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from brainalign.data.nsd import NSDLayout
from brainalign.io import InputError, Progress, atomic_path, release_memory, write_csv, write_parquet
from brainalign.models.registry import ModelEntry, at_input_size, load_registry, lookup

log = logging.getLogger("brainalign")

TABLE_COLUMNS = ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature", "yeo7", "score",
                 "relative_src_feature"]
# Chance-level top-1 for untrained copies: 1/1000 classes, 1/200 on the 200-class sets.
CHANCE_TOP1 = {"imagenet": 1e-3, "imagenet-a": 5e-3, "imagenet-a-clean": 5e-3, "imagenet-r": 5e-3,
               "imagenet-r-clean": 5e-3, "imagenet-real": 1e-3, "imagenetv2-matched-frequency": 1e-3,
               "sketch": 1e-3}


def make_mini_nsd(root: Path, registry: Path, vision_model: str, language_model: str, seed: int = 0,
                  stage: str = "all", vision_input_size: int | None = None,
                  stimuli_per_subject: int | None = None, subjects: Sequence[str] | None = None) -> None:
    """Generate the mini-NSD under ``root`` (see :mod:`brainalign.data.mini_nsd`): ``stage`` "stimuli"
    (images, captions, design, responses, atlas), "brain" (volumes, betas, ncsnr, ground truth) or
    "all". ``vision_input_size``: as the features jobs (config key of that name), so the planted
    read-outs are the features the vision model gives there. ``stimuli_per_subject`` (each subject's
    images beyond the shared ones: its ``paper`` split) and ``subjects`` change the release's size from
    the workflow's default (420; subj01, subj02, subj05, subj07), e.g. for a small release."""
    from brainalign.data.mini_nsd import MiniNSDSpec, write_brain_release, write_stimulus_release

    spec = MiniNSDSpec(seed=seed)
    if stimuli_per_subject is not None:
        spec.n_unique = int(stimuli_per_subject)
    if subjects is not None:
        spec.subjects = tuple(subjects)
    if stage in ("stimuli", "all"):
        write_stimulus_release(Path(root), spec)
    if stage in ("brain", "all"):
        reg = load_registry(registry)
        vision = at_input_size(lookup(reg, vision_model, "mini_nsd.vision_model"), vision_input_size)
        write_brain_release(Path(root), vision,
                            lookup(reg, language_model, "mini_nsd.language_model"), spec)


def mini_nsd_outputs(root: str, stage: str) -> list[str]:
    """The files one stage of the mini-NSD generator writes (the brain stage: but ``ground_truth.json``)."""
    from brainalign.data.mini_nsd import brain_files, stimulus_files

    return [str(f) for f in (stimulus_files if stage == "stimuli" else brain_files)(Path(root))]


def write_stimuli(nsd_root: Path, subject: str, split: str, out: Path, sessions=None,
                  coco_annotations: Path | None = None) -> None:
    """One subject's stimuli (73KID ``nsd_id``, ``coco_id``, first ``caption``) as CSV."""
    from brainalign.data.nsd import subject_stimuli

    write_csv(subject_stimuli(NSDLayout(nsd_root, coco_annotations), subject, split, sessions), out)


def ingest(nsd_root: Path, subject: str, split: str, rois, zscore_sessions: bool, out: Path,
           sessions=None, halves: bool = True) -> None:
    """One subject's per-ROI responses, averaged over repeats, to HDF5; with ``halves`` also the
    mean of each image's odd-numbered trials, for the split-half ceilings."""
    from brainalign.data.nsd import read_roi_responses, write_brain

    got = read_roi_responses(NSDLayout(nsd_root), subject, rois, split, zscore_sessions, sessions, halves)
    log.info("%s: %d stimuli, %d ROIs, %d with 2+ trials", subject, len(got.stim_ids), len(got.rois),
             int((got.repeats >= 2).sum()))
    write_brain(Path(out), subject, split, got.stim_ids, got.rois, got)


def split_half_ceilings(brain_h5: Path, metric: str, out: Path, device: str = "cpu", permutations: int = 10,
                        seed: int = 0) -> None:
    """``results/stats/split_half_ceiling/{split}/{subject}.csv``: per parcel the metric between
    the two halves of each image's trials and the ceiling it implies
    (:func:`brainalign.alignment.ceiling.split_half_table`)."""
    from brainalign.alignment.ceiling import split_half_table
    from brainalign.models.features import resolve_device

    table = split_half_table(Path(brain_h5), metric, resolve_device(device), permutations, seed)
    log.info("%s: split-half ceiling of %s %.3f (median over %d parcels)", table["subject"].iloc[0], metric,
             table["ceiling"].median(), len(table))
    write_csv(table, Path(out))


def noise_ceilings(nsd_root: Path, subject: str, split: str, rois, out: Path, sessions=None) -> None:
    """``results/stats/noise_ceiling/{split}/{subject}.csv``: NSD's per-parcel noise ceiling for the
    repeats the split averages (:func:`brainalign.data.nsd.parcel_noise_ceilings`)."""
    from brainalign.data.nsd import parcel_noise_ceilings

    table = parcel_noise_ceilings(NSDLayout(nsd_root), subject, rois, split, sessions)
    table.insert(0, "subject", subject)
    log.info("%s: noise ceiling %.1f%% (median over %d parcels)", subject, table["noise_ceiling"].median(), len(table))
    write_csv(table, out)


def extract(registry: Path, model: str, stimuli_csvs: Sequence[Path], images_hdf5: Path, device: str,
            outs: Sequence[Path], batch_size: int = 32, vision_input_size: int | None = None) -> None:
    """Every layer of ``model`` for each stimulus set (one subject each), from one model load.

    ``stimuli_csvs[i]`` (columns nsd_id, caption) gives the stimuli of ``outs[i]`` (HDF5, float16);
    ``images_hdf5`` is NSD's ``nsd_stimuli.hdf5``.
    """
    from brainalign.models.features import load_model, write_features

    entry = at_input_size(lookup(load_registry(registry), model, "vision_models/language_models"), vision_input_size)
    loaded = load_model(entry, device)
    done: dict[frozenset, tuple[Path, np.ndarray]] = {}  # stimulus set -> the file that holds it
    for csv, out in zip(stimuli_csvs, outs, strict=True):
        stimuli = pd.read_csv(csv)
        ids = stimuli["nsd_id"].to_numpy()
        key = frozenset(ids.tolist())
        if len(key) == len(ids) and key in done:
            # the same images as an earlier subject's (split shared1000): its rows, reordered, not a second pass
            copy_features_reordered(*done[key], ids, Path(out))
            log.info("%s on %s: %d stimuli, the same as %s's (copied)", model, csv, len(ids), done[key][0])
            continue
        names, layers, meta = loaded.extract(stimuli, Path(images_hdf5), batch_size)
        bad = [n for n, x in zip(names, layers, strict=True) if not np.isfinite(x).all()]
        if bad:
            raise InputError(f"{model}: layers {bad[:3]} ({len(bad)} of {len(names)}) give NaN or inf features for "
                             f"{csv} (fp16 overflow on the GPU? set device: cpu for this model, or check its weights)")
        log.info("%s on %s: %d stimuli, %d layers, dims %s", model, csv, len(stimuli), len(layers),
                 [x.shape[1] for x in layers])
        write_features(Path(out), model, ids, names, layers, meta)
        if len(key) == len(ids):
            done[key] = (Path(out), ids)


def copy_features_reordered(src: Path, src_ids: np.ndarray, ids: np.ndarray, out: Path) -> None:
    """``out``: the features file ``src`` (of stimuli ``src_ids``) with its rows in the order of ``ids``, the
    same set: byte-identical float16 values, written atomically."""
    import h5py

    from brainalign.models.features import write_features

    pos = pd.Series(np.arange(len(src_ids)), index=src_ids).loc[ids].to_numpy()
    with h5py.File(src, "r") as f:
        names = json.loads(f.attrs["layer_names"])
        meta = json.loads(f.attrs["metadata"])
        model = str(f.attrs["model"])
        layers = [f[f"layers/{i:03d}"][()][pos] for i in range(len(names))]
    write_features(out, model, ids, names, layers, meta)


def align_job(brain_h5: Path, features_h5: Path, model: str, subject: str, metrics, device: str,
              out: Path, nulls_out: Path | None = None, null_metric: str = "cka_36", permutations: int = 0,
              seed: int = 0, encoding: dict | None = None, summary_h5: Path | None = None) -> None:
    """Every layer x ROI x metric of one (subject, model), to parquet: :func:`align_batch_job` with one
    model."""
    align_batch_job(brain_h5, [features_h5], [model], subject, metrics, device, out, nulls_out=nulls_out,
                    null_metric=null_metric, permutations=permutations, seed=seed, encoding=encoding,
                    summary_h5=summary_h5)


def _model_rows(models: Sequence[str], per_model: Sequence[Sequence]):
    """Each model of a batch with its layers and its rows (a slice) in the engine's output, whose
    sources are the models' layers one model after another."""
    start = 0
    for model, model_layers in zip(models, per_model, strict=True):
        yield model, model_layers, slice(start, start + len(model_layers))
        start += len(model_layers)


def align_batch_job(brain_h5: Path, features_h5: Sequence[Path], models: Sequence[str], subject: str, metrics,
                    device: str, out: Path, nulls_out: Path | None = None, null_metric: str = "cka_36",
                    permutations: int = 0, seed: int = 0, encoding: dict | None = None,
                    summary_h5: Path | None = None, max_gb: float | None = None) -> None:
    """Every layer x ROI x metric of several models on one subject (one align batch,
    :mod:`brainalign.alignment.batches`), to one parquet file with the models' rows one after another.

    The layers of all the models are one engine call, so the ROIs' kernel blocks are formed once for
    the batch; the scores equal each model's own job. With ``nulls_out``, also each model's
    permutation nulls of ``null_metric`` (:func:`null_frame`) from the same data in the same process.
    ``encoding``: the ridge metric's options (config key ``encoding``). ``summary_h5``: the subject's
    brain summary (:func:`brain_summary_job`), whose ROI side the engine reads instead of computing.
    ``max_gb``: the engine's memory budget in GB (config key ``align_max_gb``; None: its default)."""
    from brainalign.alignment.engine import Plan, held_itemsize
    from brainalign.alignment.metrics import resolve_metrics, score_matrices
    from brainalign.data.nsd import brain_loaders, brain_voxel_ceilings
    from brainalign.models.features import feature_loaders, resolve_device

    models = list(models)
    if len(models) != len(features_h5) or not models:
        raise ValueError(f"{len(models)} models and {len(features_h5)} feature files: one file per model")
    what = models[0] if len(models) == 1 else f"{models[0]} .. ({len(models)} models)"
    if nulls_out is not None and permutations < 1:
        raise InputError(f"{what} on {subject}: nulls asked for with {permutations} permutations "
                         "(config key 'null_permutations' must be >= 1)")
    device = resolve_device(device)
    import torch

    log.info("align %s on %s: device %s, %d torch threads", what, subject, device, torch.get_num_threads())
    # loaders, not arrays: the engine reads each layer and ROI once, z-scores it and drops the raw copy
    ids, rois = brain_loaders(Path(brain_h5))
    per_model = [feature_loaders(Path(f), expected_ids=ids)[1] for f in features_h5]
    layers = [layer for model_layers in per_model for layer in model_layers]
    ceilings = None
    if any(s.name == "ridge_nc" for s in resolve_metrics(metrics)):
        ceilings = brain_voxel_ceilings(Path(brain_h5))
        if ceilings is None:
            raise InputError(f"{brain_h5}: no voxel noise ceilings (the release has no ncsnr.nii.gz for {subject}); "
                             "drop ridge_nc from config key 'metrics'")
    brain = None
    if summary_h5 is not None:
        from brainalign.alignment.summary import read_summary

        brain = read_summary(summary_h5)
    max_bytes = int(max_gb * 1e9) if max_gb is not None else None
    if len(models) > 1:
        _warn_groups(what, subject, [int(x.shape[1]) for x in layers], len(ids), max_bytes, device,
                     held_itemsize(Plan.of(resolve_metrics(metrics)), brain, "float32"))
    try:
        mats = score_matrices(layers, list(rois.values()), metrics, device, encoding=encoding,
                              voxel_ceilings=ceilings, brain=brain, max_bytes=max_bytes)
    except ValueError as exc:  # e.g. a k-NN variant with k >= the number of stimuli
        where = f"{brain_h5} and {summary_h5}" if brain is not None else brain_h5
        raise InputError(f"{what} on {where}: {exc} (config keys 'metrics', 'encoding')") from None
    finally:
        if brain is not None:
            brain.close()
    frames = []
    for model, model_layers, rows in _model_rows(models, per_model):
        nan = int(sum(np.isnan(m[rows]).sum() for m in mats.values()))
        if nan:
            log.warning("%s on %s: %d of %d measurements are NaN (a constant layer or parcel); they stay NaN in "
                        "the table and every statistic leaves them out", model, subject, nan,
                        sum(m[rows].size for m in mats.values()))
        for metric, mat in mats.items():
            frames.append(pd.DataFrame({
                "src_model": model,
                "tgt_model": subject,
                "metric": metric,
                "src_feature": np.repeat(np.arange(len(model_layers)), len(rois)),
                "tgt_feature": np.tile(list(rois), len(model_layers)),
                "score": mat[rows].reshape(-1),
                "n_layers": len(model_layers),
            }))
    scores = pd.concat(frames, ignore_index=True)
    if nulls_out is None:
        write_parquet(scores, out)
        return
    nulls = null_frame(ids, rois, per_model, models, subject, null_metric, permutations, seed, device, brain_h5)
    # both files, or neither: the nulls are computed before either is written
    write_parquet(nulls, nulls_out)
    write_parquet(scores, out)


def _warn_groups(what: str, subject: str, widths: Sequence[int], n: int, max_bytes: int | None, device,
                 itemsize: int = 8) -> None:
    """Warn when a batch's layers will be streamed in several groups (so the ROIs' side is redone per group);
    ``itemsize``: the bytes per feature the job holds (:func:`brainalign.alignment.engine.held_itemsize`)."""
    from brainalign.alignment.engine import source_groups
    from brainalign.alignment.metrics import default_max_bytes

    budget = max_bytes if max_bytes is not None else default_max_bytes(str(device))
    groups, _ = source_groups(widths, n, budget, itemsize=itemsize)
    if len(groups) > 1:
        held = itemsize * n * sum(widths)
        log.warning("%s on %s: the batch's %.1f GB of z-scores exceed half the memory budget (%.1f GB), so "
                    "its layers are streamed in %d groups and the ROIs' kernel blocks are formed once per group; "
                    "config key 'align_max_gb' >= %.1f makes them one group (or 'align_batch: 1': one model a "
                    "job)", what, subject, held / 1e9, budget / 1e9, len(groups), 2 * held / 1e9 + 0.05)


def converge_job(src_files: Sequence[Path], src_models: Sequence[str], tgt_files: Sequence[Path],
                 tgt_models: Sequence[str], metrics, device: str, out: Path, within: bool = False,
                 encoding: dict | None = None) -> None:
    """Model-to-model alignment (:mod:`brainalign.alignment.convergence`): every layer of each source model
    against every layer of each partner model on one stimulus set, in one engine call, to parquet.

    The sources are read layer by layer (streamed in groups within the memory budget, whatever their
    depth); the partners' layers are the targets, held whole like a subject's parcels. Every file must
    hold the same stimuli in the same order (one subject's features of one split)."""
    from brainalign.alignment.convergence import job_frame
    from brainalign.alignment.metrics import score_matrices
    from brainalign.models.features import feature_loaders, resolve_device

    src_models, tgt_models = list(src_models), list(tgt_models)
    if len(src_models) != len(src_files) or len(tgt_models) != len(tgt_files) or not src_models or not tgt_models:
        raise ValueError("one feature file per model, and at least one model on each side")
    import h5py

    with h5py.File(src_files[0], "r") as f:
        ids = f["stimulus_ids"][()]
    src = [feature_loaders(Path(f), expected_ids=ids)[1] for f in src_files]
    tgt = [feature_loaders(Path(f), expected_ids=ids)[1] for f in tgt_files]
    what = f"{src_models[0]} .. ({len(src_models)}) x {tgt_models[0]} .. ({len(tgt_models)})"
    try:
        mats = score_matrices([x for layers in src for x in layers], [x for layers in tgt for x in layers], metrics,
                              resolve_device(device), encoding=encoding)
    except ValueError as exc:  # e.g. a k-NN variant with k >= the number of stimuli
        raise InputError(f"{what} on {src_files[0]}: {exc} (config key 'convergence: metrics')") from None
    frame = job_frame(mats, src_models, [len(x) for x in src], tgt_models, [len(x) for x in tgt], within)
    log.info("%s: %d model pairs, %d rows on %d stimuli", what, frame.groupby(["src_model", "tgt_model"]).ngroups,
             len(frame), len(ids))
    write_parquet(frame, out)


def brain_summary_job(brain_h5: Path, out: Path, metrics, device: str) -> None:
    """The subject's brain summary (:mod:`brainalign.alignment.summary`) for ``metrics``, to HDF5 at ``out``."""
    from brainalign.alignment.summary import compute_summary
    from brainalign.data.nsd import brain_loaders
    from brainalign.models.features import resolve_device

    device = resolve_device(device)
    ids, rois = brain_loaders(Path(brain_h5))
    try:  # the lists go to the file as they are found (atomically)
        summary = compute_summary(list(rois.values()), metrics, device, path=out, rois=list(rois), stimuli=len(ids))
    except ValueError as exc:
        raise InputError(f"{brain_h5}: {exc} (config key 'metrics')") from None
    log.info("%s: brain summary of %d ROIs x %d stimuli in %.1f s, %.2f GB", brain_h5, len(rois), len(ids),
             summary.seconds, summary.nbytes() / 1e9)
    summary.close()


def null_frame(ids, rois: dict, per_model: Sequence[Sequence], models: Sequence[str], subject: str, metric: str,
               permutations: int, seed: int, device: str, brain_h5) -> pd.DataFrame:
    """Per model, layer and ROI the observed ``metric`` and its permutation-null summary
    (:mod:`brainalign.alignment.nulls`); ``per_model``: each model's layers (one engine call for all of them)."""
    from brainalign.alignment.nulls import null_scores, summarise
    from brainalign.alignment.nulls import permutations as shuffles

    what = models[0] if len(models) == 1 else f"{models[0]} .. ({len(models)} models)"
    perms = shuffles(len(ids), permutations, seed, subject)
    layers = [layer for model_layers in per_model for layer in model_layers]
    try:
        observed, null = null_scores(layers, list(rois.values()), metric, perms, device,
                                     what=f"nulls {what} on {subject}")
    except ValueError as exc:
        raise InputError(f"{what} on {brain_h5}: {exc} (config key 'analysis: metric')") from None
    summary = summarise(observed, null)
    log.info("%s on %s: %d permutations, %d of %d measurements with p_perm = 1/(1+P)", what, subject,
             permutations, int((summary["n_exceed"] == 0).sum()), observed.size)
    frames = []
    for model, model_layers, rows in _model_rows(models, per_model):
        frames.append(pd.DataFrame({
            "src_model": model, "tgt_model": subject, "metric": metric,
            "src_feature": np.repeat(np.arange(len(model_layers)), len(rois)),
            "tgt_feature": np.tile(list(rois), len(model_layers)),
            "score": observed[rows].reshape(-1), "n_null": permutations,
        } | {k: v[rows].reshape(-1) for k, v in summary.items()}))
    return pd.concat(frames, ignore_index=True)


def null_stats(null_files: Sequence[Path], out: Path, parcels_out: Path) -> None:
    """``results/stats/nulls_{modality}.parquet`` (every measurement's p-values and FDR q-values)
    and ``..._parcels.csv`` (per subject, model and parcel: the fraction of significant layers)."""
    from brainalign.alignment.nulls import null_tables

    frame = pd.concat([pd.read_parquet(f) for f in null_files], ignore_index=True)
    rows, parcels = null_tables(frame)
    log.info("%d tests, %d significant after FDR (q_normal < 0.05)", len(rows), int(rows["significant"].sum()))
    write_parquet(rows, out)
    write_csv(parcels, parcels_out)


def benchmark_columns(entry: ModelEntry) -> dict:
    """Benchmark columns of one model (NaN where the tables have none)."""
    from brainalign import resources as res

    if entry.modality == "vision":
        cols = res.VISION_BENCHMARK_COLUMNS
        table = res.vision_benchmarks().set_index("model")
        out = {c: np.nan for c in cols} | {"arch": None}
        key = entry.benchmark
        if key is None and entry.extra.get("chance_benchmarks"):
            base = table[table.index.str.split(".").str[0] == entry.architecture]
            out |= dict(CHANCE_TOP1)
            if len(base):
                out["#Params (M)"] = base["#Params (M)"].iloc[0]
                out["arch"] = base["arch"].iloc[0]
        elif key is not None and key in table.index:
            out |= {c: table.loc[key, c] for c in cols} | {"arch": table.loc[key, "arch"]}
        return out
    cols = res.LANGUAGE_BENCHMARK_COLUMNS
    table = res.language_benchmarks().set_index("model")
    out = {c: np.nan for c in cols}
    if entry.benchmark is not None and entry.benchmark in table.index:
        out |= {c: table.loc[entry.benchmark, c] for c in cols}
    return out


def _table_schema(bench: dict) -> pa.Schema:
    """Arrow schema of a modality table: dictionary-encoded strings, then the benchmark columns."""
    text = pa.dictionary(pa.int32(), pa.string())
    fields = [pa.field(c, text) for c in ("src_model", "tgt_model", "metric")]
    fields += [pa.field("src_feature", pa.int64()), pa.field("tgt_feature", text), pa.field("yeo7", text),
               pa.field("score", pa.float64()), pa.field("relative_src_feature", pa.int64())]
    fields += [pa.field(c, pa.string() if c == "arch" else pa.float64()) for c in bench]
    return pa.schema(fields)


def _check_job_file(path, df: pd.DataFrame, expect: tuple | None) -> tuple:
    """The row invariant of one model's rows in an alignment file: one model and subject, layers x ROIs x metrics
    rows with no key twice, and the same ROIs and metrics as the first file. Returns (ROIs, metrics)."""
    if df.empty:
        raise InputError(f"{path}: no rows (delete it and rerun its align job)")
    for col in ("src_model", "tgt_model"):
        if df[col].nunique() != 1:
            raise InputError(f"{path}: {df[col].nunique()} values in {col!r}, expected one (delete it and rerun)")
    rois, metrics = tuple(sorted(df["tgt_feature"].unique())), tuple(sorted(df["metric"].unique()))
    n_layers = int(df["n_layers"].iloc[0])
    want = n_layers * len(rois) * len(metrics)
    if len(df) != want or df.duplicated(["src_feature", "tgt_feature", "metric"]).any():
        raise InputError(f"{path}: {len(df)} rows, expected {n_layers} layers x {len(rois)} ROIs x {len(metrics)} "
                         f"metrics = {want} with no key twice (delete it and rerun its align job)")
    if expect is not None and (rois, metrics) != expect:
        raise InputError(f"{path}: its ROIs or metrics differ from the other alignment files' (delete it and rerun)")
    return rois, metrics


def aggregate(alignment_files: Sequence[Path], registry: Path, out: Path) -> None:
    """One modality's table: the paper's columns, then the benchmark columns.

    Streams: one alignment file (an align batch's models on one subject) at a time, each model one
    row group of the output (strings dictionary-encoded), so memory stays at one job's rows whatever
    the table's size. Each model's rows are checked first (:func:`_check_job_file`), so the table has
    subjects x layers x ROIs x metrics rows per model and no key twice; the first file that breaks
    this is named.
    """
    import pyarrow.parquet as pq

    from brainalign.resources import hcp_parcels

    if not alignment_files:
        raise InputError(f"{out}: no alignment results to aggregate (the config lists no models of this modality)")
    reg = load_registry(registry)
    yeo = dict(zip(hcp_parcels()["name"], hcp_parcels()["yeo7"], strict=True))
    writer, schema, rows, expect = None, None, 0, None
    progress = Progress(len(alignment_files), f"aggregate {Path(out).name}", "job files")
    with atomic_path(out) as tmp:
        try:
            for i, f in enumerate(alignment_files):
                progress.step()
                batch = pd.read_parquet(f)
                if batch.empty:
                    raise InputError(f"{f}: no rows (delete it and rerun its align job)")
                # an align batch's file holds its models one after another (brainalign.alignment.batches)
                for model in batch["src_model"].unique():
                    df = batch[batch["src_model"] == model]
                    expect = _check_job_file(f, df, expect)
                    df = df.assign(yeo7=df["tgt_feature"].map(yeo), relative_src_feature=np.floor(
                        df["src_feature"] / df["n_layers"] * 8).astype(np.int64))[TABLE_COLUMNS]
                    bench = benchmark_columns(reg[model])
                    df = df.assign(**bench)
                    if schema is None:
                        schema = _table_schema(bench)
                        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                    writer.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
                    rows += len(df)
                del batch, df
                release_memory()
                if (i + 1) % 100 == 0:
                    log.info("aggregate: %d/%d files, %d rows", i + 1, len(alignment_files), rows)
        finally:
            if writer is not None:
                writer.close()
    log.info("%s: %d rows from %d files", out, rows, len(alignment_files))


def measured_model_scores(table_path: Path, pooling: str, out: Path, check: Path | None = None,
                          modality: str | None = None) -> None:
    """One row per model: its brain score for every metric of the table (pooled as ``pooling``
    says), ``arch`` and the benchmark columns; the format of the paper's score tables (which hold
    the ``cka_*`` columns), with a column per other metric variant beside them.

    Out of core (:mod:`brainalign.analysis.tables`): one aggregate query per table. Benchmark columns the
    table lacks are filled from the project's benchmark tables by model name. ``check`` is the
    table's :func:`brainalign.analysis.tables.check_table` report (made here if None); ``modality``
    defaults to the file name's ``{modality}_all.parquet``.
    """
    from brainalign import resources as res
    from brainalign.analysis import tables

    con = tables.connect()
    info = tables.TableInfo.from_json(check) if check else tables.check_table(table_path, con)
    modality = modality or Path(table_path).name.split("_")[0]
    from brainalign.alignment.metrics import METRICS, metric_spec

    cka = sorted((m for m in info.metrics if m.startswith("cka_")), key=lambda m: int(m[4:]))
    others = [m for m in METRICS if m in info.metrics and m not in cka]
    others += sorted(m for m in info.metrics if m not in METRICS and m not in cka and metric_spec(m) is not None)
    if not cka + others:
        raise InputError(f"{table_path}: no known metric in column 'metric' (found {sorted(info.metrics)[:5]})")
    layers = tables.layer_scores(table_path, cka + others, con)
    models = sorted(info.models)
    out_df = pd.DataFrame(index=pd.Index(models, name="model"))
    for metric in cka + others:
        out_df[metric] = tables.brain_scores(layers, metric, pooling).set_index("src_model")["brain_score"]
    wanted = (res.VISION_BENCHMARK_COLUMNS + ["arch"] if modality == "vision"
              else res.LANGUAGE_BENCHMARK_COLUMNS)
    present = [c for c in info.benchmark_columns if c in wanted]
    bench = tables.model_benchmarks(table_path, present, con).reindex(models)
    missing = [c for c in wanted if c not in present]
    if missing:
        known = (res.vision_benchmarks() if modality == "vision" else res.language_benchmarks()).set_index("model")
        for c in missing:
            bench[c] = known[c].reindex(models).to_numpy()
        found = int(known.index.isin(models).sum())
        log.warning("%s: columns %s filled from the project's benchmark tables by model name (%d of %d models "
                    "found)", table_path, missing, found, len(models))
    out_df = out_df.join(bench[present + missing])
    out_df["n_layers"] = pd.Series(info.models).reindex(models).to_numpy()
    out_df["pooling"] = pooling
    write_csv(out_df.reset_index(), out)


def merged_registry(registry_files: Sequence[Path]) -> dict[str, ModelEntry]:
    """The entries of several registry files, the first file's entry winning for a name in two."""
    registry: dict[str, ModelEntry] = {}
    for path in reversed([Path(p) for p in registry_files]):
        registry.update(load_registry(path))
    return registry


def convergence_stats(tables_by_kind: dict[str, Path], pooling: str, score_files: dict[str, Path],
                      benchmarks: dict[str, str], brain_metric: str, registry_files: Sequence[Path],
                      pairs_out: Path, models_out: Path, correlations_out: Path, n_resamples: int = 10_000,
                      seed: int = 0) -> None:
    """``results/stats/convergence/``: ``pairs.csv`` (each model pair's pooled score per metric and kind),
    ``models.csv`` (each model's convergence per metric, beside its benchmark and its brain score) and
    ``correlations.csv`` (:func:`brainalign.analysis.convergence.convergence_correlations`). ``score_files``:
    the brain's model-scores tables per modality (``results/stats/model_scores_{modality}.csv``), where the
    brain score is ``brain_metric`` under the brain pooling; a modality without one gets NaN brain scores."""
    from brainalign.analysis import convergence as conv
    from brainalign.analysis.robustness import model_families
    from brainalign.analysis.tables import connect

    con = connect()
    pairs = {}
    for kind, path in tables_by_kind.items():
        conv.check_convergence_table(path)
        pairs[kind] = conv.pair_scores(path, pooling, con)
    pair_table = pd.concat([df.assign(kind=kind) for kind, df in pairs.items()], ignore_index=True)
    models = conv.model_convergence(pairs)
    scores = {mod: pd.read_csv(path) for mod, path in score_files.items()}
    registry = merged_registry(registry_files)
    families = dict(zip(models["model"], model_families(models["model"].tolist(), registry), strict=True))
    table = conv.convergence_correlations(models, scores, benchmarks, brain_metric, families, n_resamples, seed)
    # each model's row beside its benchmark and brain score (the figure's points)
    extra = []
    for (modality, model), _ in models.groupby(["modality", "model"], sort=False):
        s = scores.get(modality)
        row = {"modality": modality, "model": model, "benchmark_name": benchmarks.get(modality)}
        hit = s[s["model"] == model] if s is not None else None
        ok = hit is not None and len(hit)
        bench = benchmarks.get(modality)
        row["benchmark"] = float(hit[bench].iloc[0]) if ok and bench in hit else np.nan
        row["brain_score"] = float(hit[brain_metric].iloc[0]) if ok and brain_metric in hit else np.nan
        row["brain_metric"] = brain_metric
        row["family"] = families[model]
        extra.append(row)
    models = models.merge(pd.DataFrame(extra), on=["modality", "model"], how="left")
    table["n_resamples"] = n_resamples
    write_csv(pair_table, pairs_out, index=False)
    write_csv(models, models_out, index=False)
    write_csv(table, correlations_out, index=False)
    log.info("convergence: %d model pairs, %d models, %d correlations", pair_table.groupby(
        ["kind", "src_model", "tgt_model"]).ngroups, models["model"].nunique(), len(table))


def robustness_stats(vision_scores: Path, language_scores: Path, sigma: int, registry_files: Sequence[Path],
                     out: Path, n_resamples: int = 10_000, seed: int = 0) -> None:
    """``results/stats/robustness_sigma{S}.csv``: per (modality, benchmark) the paper's r and CIs
    beside the sound ones (:mod:`brainalign.analysis.robustness`): Bonett-Wright Spearman CI, bootstrap
    and family-cluster bootstrap CIs, family-mean r, permutation p, partial r given log(params)
    and number of layers. Families come from the registry files (first file wins)."""
    from brainalign.analysis.robustness import model_families, robustness_table
    from brainalign.analysis.stats import LANGUAGE_TABLE_METRICS, VISION_TABLE_METRICS

    col = f"cka_{sigma}"
    registry = merged_registry(registry_files)
    parts = []
    for modality, path, benchmarks in (("vision", vision_scores, VISION_TABLE_METRICS),
                                       ("language", language_scores, LANGUAGE_TABLE_METRICS)):
        df = pd.read_csv(path)
        if col not in df.columns:
            raise InputError(f"{path}: no {col} column (metrics in the config must include it)")
        benches = [b for b in benchmarks if b != "score" and b in df.columns]
        parts.append((modality, df, benches, model_families(df["model"].tolist(), registry)))
        log.info("%s: %d models in %d families, %d benchmarks", modality, len(df), len(set(parts[-1][3])),
                 len(benches))
    table = robustness_table(parts, col, n_resamples, seed)
    table["n_resamples"] = n_resamples
    write_csv(table, out)


def headline_by_metric_stats(score_files: dict[str, Path], benchmarks: dict[str, str],
                             registry_files: Sequence[Path], out: Path, n_resamples: int = 10_000,
                             seed: int = 0) -> None:
    """``results/stats/headline_by_metric.csv``: per modality and metric variant (every metric the
    model scores hold), the pooled brain score's correlation with the modality's headline benchmark
    (``benchmarks[modality]``) with the robustness columns
    (:func:`brainalign.analysis.robustness.headline_by_metric`)."""
    from brainalign.alignment.metrics import METRICS, metric_spec
    from brainalign.analysis.robustness import headline_by_metric, model_families

    registry = merged_registry(registry_files)
    parts, metrics = [], []
    for modality, path in score_files.items():
        df = pd.read_csv(path)
        bench = benchmarks[modality]
        if bench not in df.columns:
            raise InputError(f"{path}: no column {bench!r} (config key 'analysis: {modality}_benchmark')")
        found = [c for c in df.columns if metric_spec(c) is not None]
        metrics += [m for m in found if m not in metrics]
        parts.append((modality, df, bench, model_families(df["model"].tolist(), registry)))
        log.info("%s: %d models, %d metric variants against %s", modality, len(df), len(found), bench)
    order = [m for m in METRICS if m in metrics] + [m for m in metrics if m not in METRICS]
    table = headline_by_metric(parts, order, n_resamples, seed)
    table["n_resamples"] = n_resamples
    write_csv(table, out)


def paper_model_scores(modality: str, out: Path) -> None:
    """The paper's own per-model scores (precomputed mode), as shipped with the package."""
    from brainalign.analysis.stats import load_paper_scores

    df = load_paper_scores(modality)
    df["pooling"] = "paper (published per-model scores)"
    write_csv(df, out)


def correlation_stats(vision_scores: Path, language_scores: Path, sigma: int, out: Path, numeric_out: Path) -> None:
    """The paper's headline statistics table for kernel size ``sigma`` (``results/stats/``)."""
    from brainalign.analysis.stats import format_table, paper_table

    col = f"cka_{sigma}"
    vision, language = pd.read_csv(vision_scores), pd.read_csv(language_scores)
    for name, df in (("vision", vision), ("language", language)):
        if col not in df.columns:
            raise InputError(f"{name} model scores have no {col} (metrics in the config must include it)")
    table = paper_table(language, vision, score_col=col)
    write_csv(table, numeric_out)
    write_csv(format_table(table), out, index=True)
