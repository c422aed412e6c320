"""The workflow end to end on the mini-NSD: DAG, targeted rebuild, resume, ground truth, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow, job_counts, snakemake

from brainalign.alignment.metrics import ALL_METRICS, EVERY_METRICS
from brainalign.data.nsd import read_brain

pytestmark = pytest.mark.workflow

MODELS = {"vision": ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
                     "tf_efficientnet_lite0.untrained", "user_cnn"],
          "language": ["all-MiniLM-L6-v2", "all-MiniLM-L6-v2.untrained", "all-MiniLM-L6-v2.untrained-seed1"]}
# align jobs: per subject, one per batch of up to 8 models (config key align_batch): the 5 vision models and
# the trained CNN's 4 checkpoints in 2 batches, the 3 language models in 1
N_ALIGN = 4 * (2 + 1)
# layers read per model (MiniLM: embeddings + 6 blocks; EfficientNet-Lite: 7; config/user_models.py's
# small_cnn: 4; the mobilenetv3_small_050
# checkpoints: 6) and the mini-NSD's parcels: known constants, not read from the table they check
N_LAYERS = {**{m: 7 for m in MODELS["vision"] + MODELS["language"]}, "user_cnn": 4,  # its 4 blocks
            **{f"mini_nsd_cnn@epoch{e}": 6 for e in (1, 2, 4, 8)}}
N_PARCELS = 12
FIGURES = {  # rule -> one of its figure files (PNG; a PDF and a CSV sit beside each)
    "figure_performance": "results/figures/performance/brain_score_vs_benchmark.png",
    "figure_performance_sigma": "results/figures/performance/correlation_by_sigma.png",
    "figure_consistency": "results/figures/consistency/subject_consistency.png",
    "figure_metrics": "results/figures/metrics/metric_correlation.png",
    "figure_layers": "results/figures/layers/layerwise_profiles.png",
    "figure_kernel_size": "results/figures/kernel_size/change_28_68.png",
    "figure_umap": "results/figures/umap/umap_profiles.png",
    "figure_brain_map": "results/figures/brain_maps/vision_change.png",
    "figure_trajectories": "results/figures/trajectories/training_trajectories.png",
    "figure_robustness": "results/figures/robustness/robustness_forest.png",
    "figure_headline_by_metric": "results/figures/metric_families/headline_by_metric.png",
    "figure_ceiling_map": "results/figures/brain_maps/noise_ceiling.png",
}
EXPECTED_JOBS = {"mini_nsd_stimuli": 1, "mini_nsd": 1, "stimuli": 4, "ingest": 4, "noise_ceiling": 4,
                 "brain_summary": 4,
                 "train_mini_nsd_cnn": 1, "features": len(MODELS["vision"]) + len(MODELS["language"]) + 4,
                 "align": N_ALIGN, "null_stats": 2, "aggregate": 2, "check_table": 2,
                 "model_scores": 2, "correlation_stats": 1, "robustness": 1, "trajectory_leadlag": 1,
                 "headline_by_metric": 1,
                 "split_half_ceiling": 4, "roi_scores": 2,
                 **{rule: 1 for rule in FIGURES},
                 "figure_brain_map": 6, "figure_ceiling_map": 1, "explorer": 1, "all": 1}
EXPECTED_JOBS["total"] = sum(EXPECTED_JOBS.values())


def test_dry_run_lists_jobs_per_rule_and_runs_nothing(tmp_path):
    work = copy_workflow(tmp_path)
    proc = snakemake(work, "-n", "--cores", "2")
    assert job_counts(proc.stdout) == EXPECTED_JOBS
    assert not (work / "results").exists()


def test_tables_hold_one_row_per_measurement(demo_run):
    for modality, names in MODELS.items():
        models = set(names) | ({f"mini_nsd_cnn@epoch{e}" for e in (1, 2, 4, 8)} if modality == "vision" else set())
        table = pd.read_parquet(demo_run / f"results/tables/{modality}_all.parquet")
        assert table.columns[:8].tolist() == ["src_model", "tgt_model", "metric", "src_feature", "tgt_feature",
                                              "yeo7", "score", "relative_src_feature"]
        key = ["tgt_model", "src_model", "src_feature", "tgt_feature", "metric"]
        assert not table.duplicated(key).any()
        # every family, and ridge_nc beside ridge (the mini-NSD has NSD's ncsnr)
        assert set(table["metric"]) == set(EVERY_METRICS) | {"ridge_nc"} and set(ALL_METRICS) < set(EVERY_METRICS)
        assert set(table["src_model"]) == models
        assert set(table["tgt_model"]) == {"subj01", "subj02", "subj05", "subj07"}
        n_layers = table.groupby("src_model")["src_feature"].nunique()
        assert n_layers.to_dict() == {m: N_LAYERS[m] for m in models}
        assert table["tgt_feature"].nunique() == N_PARCELS
        assert len(table) == 4 * sum(N_LAYERS[m] for m in models) * N_PARCELS * (len(EVERY_METRICS) + 1)
        assert table["relative_src_feature"].between(0, 7).all()
        # NaN only where no voxel has a noise ceiling (ridge_nc of the noise-only parcel)
        assert table.loc[table["metric"] != "ridge_nc", "score"].notna().all()
    vision = pd.read_parquet(demo_run / "results/tables/vision_all.parquet")
    lite0 = vision[vision.src_model == "tf_efficientnet_lite0"]
    assert lite0["imagenet"].iloc[0] == pytest.approx(0.74832)


def test_planted_ground_truth_is_recovered(demo_run):
    truth = json.loads((demo_run / "results/mini_nsd/ground_truth.json").read_text())["parcels"]
    table = pd.concat([pd.read_parquet(demo_run / f"results/tables/{m}_all.parquet") for m in ("vision", "language")],
                      ignore_index=True)
    cka = table[table.metric == "cka_36"]
    peak_depth = {}
    for parcel, planted in truth.items():
        if planted is None:
            continue
        for subject, rows in cka[cka.tgt_feature == parcel].groupby("tgt_model"):
            best = rows.loc[rows["score"].idxmax()]
            assert (best.src_model, best.src_feature) == (planted["model"], planted["layer"]), (parcel, subject)
        if planted["modality"] == "vision":
            rows = cka[(cka.tgt_feature == parcel) & (cka.src_model == planted["model"])]
            peak_depth[parcel] = rows.groupby("src_feature")["score"].mean().idxmax()
    # posterior parcels peak at earlier depth
    posterior_to_anterior = ["V1", "V2", "V3", "V4", "LO1", "FFC"]
    depths = [peak_depth[p] for p in posterior_to_anterior]
    assert depths == sorted(depths) and depths[0] < depths[-1]
    # the control parcel (noise only) aligns far worse than any planted one
    control = cka[cka.tgt_feature == "4"]["score"].max()
    planted_min = min(cka[cka.tgt_feature == p]["score"].max() for p, t in truth.items() if t)
    assert control < 0.5 * planted_min


NEW_FAMILIES = ("linear_cka", "rsa_pearson", "rsa_spearman", "ridge")


@pytest.mark.parametrize("metric", NEW_FAMILIES)
def test_every_new_family_finds_the_planted_parcels(demo_run, metric):
    """For each planted parcel and its planted model, in every subject, the best layer's score beats
    the noise-only parcel's best; trained models score above their untrained copies."""
    truth = json.loads((demo_run / "results/mini_nsd/ground_truth.json").read_text())["parcels"]
    table = pd.concat([pd.read_parquet(demo_run / f"results/tables/{m}_all.parquet") for m in ("vision", "language")],
                      ignore_index=True)
    rows = table[table.metric == metric]
    best = rows.groupby(["src_model", "tgt_model", "tgt_feature"])["score"].max()
    control = next(p for p, t in truth.items() if t is None)
    for parcel, planted in truth.items():
        if planted is None:
            continue
        for subject in ("subj01", "subj02", "subj05", "subj07"):
            mine, noise = best[(planted["model"], subject, parcel)], best[(planted["model"], subject, control)]
            assert mine > noise, (metric, parcel, subject, mine, noise)
    for modality, trained, untrained in (
            ("vision", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"],
             ["tf_efficientnet_lite0.untrained"]),
            ("language", ["all-MiniLM-L6-v2"], ["all-MiniLM-L6-v2.untrained", "all-MiniLM-L6-v2.untrained-seed1"])):
        scores = pd.read_csv(demo_run / f"results/stats/model_scores_{modality}.csv").set_index("model")[metric]
        assert scores[untrained].max() < scores[trained].min(), (metric, modality, scores.to_dict())


def test_ridge_nc_is_ridge_over_the_root_of_the_planted_noise_ceiling(demo_run):
    """The mini-NSD's planted voxels have ncsnr 1 and each paper-split image 3 trials: NC = 1 / (1 + 1/3)
    = 0.75 for every such voxel, so ridge_nc = ridge / sqrt(0.75) there; parcels without signal
    (ncsnr 0) have no voxel with a ceiling: NaN."""
    truth = json.loads((demo_run / "results/mini_nsd/ground_truth.json").read_text())["parcels"]
    table = pd.concat([pd.read_parquet(demo_run / f"results/tables/{m}_all.parquet") for m in ("vision", "language")],
                      ignore_index=True)
    key = ["src_model", "tgt_model", "src_feature", "tgt_feature"]
    wide = table[table.metric.isin(["ridge", "ridge_nc"])].set_index([*key, "metric"])["score"].unstack("metric")
    planted = wide.index.get_level_values("tgt_feature").isin([p for p, t in truth.items() if t])
    np.testing.assert_allclose(wide.loc[planted, "ridge_nc"], wide.loc[planted, "ridge"] / np.sqrt(0.75), rtol=1e-9)
    control = wide.index.get_level_values("tgt_feature") == next(p for p, t in truth.items() if t is None)
    assert wide.loc[control, "ridge_nc"].isna().all() and wide.loc[control, "ridge"].notna().all()


def test_headline_by_metric_table_and_figure(demo_run):
    """One row per (modality, metric variant) measured; its r is the correlation of the pooled score
    (recomputed here from the tables with pandas) with the headline benchmark."""
    table = pd.read_csv(demo_run / "results/stats/headline_by_metric.csv")
    for modality, bench in (("vision", "imagenet"), ("language", "Average ⬆️")):
        sub = table[table.modality == modality].set_index("metric")
        want = EVERY_METRICS[:EVERY_METRICS.index("ridge") + 1] + ["ridge_nc"]
        assert list(sub.index) == want and (sub["benchmark"] == bench).all()
        scores = pd.read_csv(demo_run / f"results/stats/model_scores_{modality}.csv").set_index("model")
        raw = pd.read_parquet(demo_run / f"results/tables/{modality}_all.parquet")
        for metric in ("cka_36", "ridge", "rsa_spearman"):
            pooled = _subject_scores(raw, metric).mean(axis=1)
            np.testing.assert_allclose(scores.loc[pooled.index, metric], pooled, rtol=1e-9)
            ok = scores[bench].notna()
            if ok.sum() >= 4:
                r = np.corrcoef(scores.loc[ok, metric], scores.loc[ok, bench])[0, 1]
                assert sub.loc[metric, "pearson_r"] == pytest.approx(r, abs=1e-9)
    fig = pd.read_csv(demo_run / "results/figures/metric_families/headline_by_metric.csv")
    assert len(fig) == len(table) and (demo_run / "results/figures/metric_families/headline_by_metric.png").exists()


def test_noise_ceilings_recover_the_planted_noise(demo_run):
    """The mini-NSD plants unit-variance signal plus unit-variance noise in each trial (ncsnr = 1) and
    shows every paper-split image 3 times: NSD's formula gives 100 / (1 + 1/3) = 75 % in the planted
    parcels and 0 in the noise-only control parcel."""
    truth = json.loads((demo_run / "results/mini_nsd/ground_truth.json").read_text())
    for subject in ("subj01", "subj02", "subj05", "subj07"):
        nc = pd.read_csv(demo_run / f"results/stats/noise_ceiling/paper/{subject}.csv").set_index("roi")
        assert len(nc) == 12 and (nc["A"] == 420).all() and (nc[["B", "C"]] == 0).all().all()
        for parcel, source in truth["parcels"].items():
            assert nc.loc[parcel, "noise_ceiling"] == pytest.approx(0.0 if source is None else 75.0, abs=1e-3)
            assert nc.loc[parcel, "n_valid"] == nc.loc[parcel, "n_voxels"]


def test_ceiling_map_is_the_mean_of_the_subjects_ceilings(demo_run):
    truth = json.loads((demo_run / "results/mini_nsd/ground_truth.json").read_text())["parcels"]
    per = pd.concat([pd.read_csv(demo_run / f"results/stats/noise_ceiling/paper/{s}.csv")
                     for s in ("subj01", "subj02", "subj05", "subj07")])
    got = pd.read_csv(demo_run / "results/figures/brain_maps/noise_ceiling.csv").set_index("tgt_feature")
    assert len(got) == 12 and got["on_atlas"].all() and (got["n_subjects"] == 4).all()
    want = per.groupby("roi", sort=False)["noise_ceiling"].mean()
    np.testing.assert_allclose(got.loc[want.index, "value"], want)
    assert got.loc["4", "value"] == pytest.approx(0, abs=1e-3)
    assert all(got.loc[p, "value"] == pytest.approx(75, abs=1e-3) for p, t in truth.items() if t)


def test_split_half_ceiling_recomputed_from_the_raw_trials(demo_run):
    """One subject and two parcels, from the release's own files (label volume, responses.tsv, the
    session betas), with the halves built here: odd-numbered trials of each image vs the rest."""
    import nibabel as nib

    from brainalign.alignment.metrics import score_matrices

    nsd, subject = demo_run / "results/mini_nsd", "subj05"
    got = pd.read_csv(demo_run / f"results/stats/split_half_ceiling/paper/{subject}.csv").set_index("roi")
    ctab = (nsd / "nsddata/freesurfer/fsaverage/label/HCP_MMP1.mgz.ctab").read_text().split("\n")
    index = {line.split()[1]: int(line.split()[0]) for line in ctab if line.strip()}
    labels = np.asanyarray(nib.load(nsd / f"nsddata/ppdata/{subject}/func1pt8mm/roi/HCP_MMP1.nii.gz").dataobj)
    labels = np.round(labels).reshape(-1)
    trials = pd.read_csv(nsd / f"nsddata/ppdata/{subject}/behav/responses.tsv", sep="\t")
    betas_dir = nsd / f"nsddata_betas/ppdata/{subject}/func1pt8mm/betas_fithrf_GLMdenoise_RR"
    sessions = [np.asanyarray(nib.load(betas_dir / f"betas_session{k:02d}.nii.gz").dataobj)
                for k in sorted(trials["SESSION"].unique())]
    flat = np.concatenate([b.reshape(-1, b.shape[-1]).T for b in sessions]) / 300.0  # trials x voxels
    with h5py.File(demo_run / f"results/brain/paper/{subject}.h5") as f:
        ids = f["stimulus_ids"][()]
    assert len(flat) == len(trials)
    for roi in ("V1", "4"):
        vox = np.flatnonzero(labels == index[roi])
        a, b = [], []
        for kid in ids:
            rows = np.flatnonzero(trials["73KID"].to_numpy() == kid)  # session order
            a.append(flat[rows[0::2]][:, vox].mean(0))
            b.append(flat[rows[1::2]][:, vox].mean(0))
        s = score_matrices([np.array(a)], [np.array(b)], ["cka_36"])["cka_36"][0, 0]
        assert got.loc[roi, "split_half"] == pytest.approx(s, abs=1e-4)
        assert got.loc[roi, "n_images"] == len(ids) == 420
        assert (got.loc[roi, "m_a"], got.loc[roi, "m_b"], got.loc[roi, "m"]) == (2, 1, 3)


def test_split_half_ceilings_and_normalised_scores_on_the_planted_parcels(demo_run):
    """Planted parcels: a ceiling that beats every shuffle in every subject, and no model above it;
    the noise-only parcel: a split-half score at its chance level, no ceiling, no normalised score.
    The normalised brain map is the subjects' mean of the per-ROI table."""
    truth = json.loads((demo_run / "results/mini_nsd/ground_truth.json").read_text())["parcels"]
    subjects = ("subj01", "subj02", "subj05", "subj07")
    ceil = pd.concat([pd.read_csv(demo_run / f"results/stats/split_half_ceiling/paper/{s}.csv") for s in subjects])
    assert len(ceil) == 4 * 12
    planted = ceil[ceil["roi"] != "4"]
    assert np.allclose(planted["p_split_half"], 1 / 11) and (planted["ceiling"] > 0.8).all()
    control = ceil[ceil["roi"] == "4"]
    assert (control["split_half"] - control["split_half_null"]).abs().mean() < 0.02
    for mod in ("vision", "language"):
        rois = pd.read_csv(demo_run / f"results/stats/roi_scores_{mod}.csv")
        assert len(rois) == 4 * 12
        # independent: the per-ROI score is the mean over models of the best layer, from the table
        table = pd.read_parquet(demo_run / f"results/tables/{mod}_all.parquet",
                                columns=["src_model", "tgt_model", "metric", "tgt_feature", "score"])
        table = table[table.metric == "cka_36"]
        want = table.groupby(["tgt_model", "tgt_feature", "src_model"])["score"].max().groupby(
            ["tgt_model", "tgt_feature"]).mean()
        rois = rois.set_index(["tgt_model", "tgt_feature"])
        np.testing.assert_allclose(rois.loc[want.index, "score"], want, rtol=1e-6)
        c = ceil.set_index(["subject", "roi"])["ceiling"]
        ok = [i for i in want.index if i[1] != "4"]
        np.testing.assert_allclose(rois.loc[ok, "normalised_score"], want[ok] / c.loc[ok].to_numpy(), rtol=1e-6)
        assert rois.loc[[i for i in want.index if i[1] == "4"], "normalised_score"].isna().all()
        assert rois.loc[ok, "noise_ceiling"].eq(75.0).all()
        best = table.groupby(["tgt_model", "tgt_feature"])["score"].max()
        assert (best.loc[ok] <= c.loc[ok].to_numpy() + 0.02).all()  # no model beats a noise-free one
        mapped = pd.read_csv(demo_run / f"results/figures/brain_maps/{mod}_normalised.csv").set_index("tgt_feature")
        mean = rois["normalised_score"].groupby(level="tgt_feature").mean()
        np.testing.assert_allclose(mapped.loc[mean.index, "value"], mean, rtol=1e-6)
        assert {p for p, t in truth.items() if t} <= set(mapped.index[mapped["value"].notna()])


def test_layer_profiles_normalised_by_the_ceilings(demo_run, tmp_path):
    """``analysis.normalise_layers``: the layer figure's numbers are the mean over (model, layer, ROI)
    of score / ceiling, recomputed here with pandas from the table and the ceiling files."""
    from brainalign.figures.stages import layers

    subjects = ("subj01", "subj02", "subj05", "subj07")
    ceilings = [str(demo_run / f"results/stats/split_half_ceiling/paper/{s}.csv") for s in subjects]
    inputs = {m: str(demo_run / f"results/tables/{m}_all.parquet") for m in MODELS}
    inputs |= {f"{m}_check": str(demo_run / f"results/checks/{m}_all.json") for m in MODELS} | {"ceilings": ceilings}
    out = {k: str(tmp_path / f"layers.{k}") for k in ("png", "pdf", "csv")}
    layers(inputs, out, {"metric": "cka_36", "normalise_layers": True})
    got = pd.read_csv(out["csv"])
    ceil = pd.concat([pd.read_csv(c) for c in ceilings])
    ceil = ceil[ceil["p_split_half"] <= 0.1].rename(columns={"subject": "tgt_model", "roi": "tgt_feature"})
    for mod in MODELS:
        t = pd.read_parquet(inputs[mod])
        t = t[t.metric == "cka_36"].merge(ceil[["tgt_model", "tgt_feature", "ceiling"]],
                                          on=["tgt_model", "tgt_feature"])
        assert "4" not in set(t["tgt_feature"])  # the control parcel has no ceiling
        want = (t["score"] / t["ceiling"]).groupby([t["tgt_model"], t["yeo7"], t["relative_src_feature"]]).mean()
        mine = got[got["modality"] == mod].set_index(["tgt_model", "yeo7", "relative_src_feature"])["score"]
        np.testing.assert_allclose(mine.loc[want.index], want, rtol=1e-9)
        assert len(mine) == len(want)


def test_permutation_nulls_flag_the_planted_parcels_and_not_the_noise_only_one(demo_run):
    """P permutations (the demo config's) per (subject, model); FDR over every test of a modality."""
    from brainalign.alignment.metrics import score_matrices
    from brainalign.alignment.nulls import permutations
    from brainalign.models.features import read_features

    P = yaml.safe_load((demo_run / "config/config.yaml").read_text())["null_permutations"]
    assert P >= 10
    truth = json.loads((demo_run / "results/mini_nsd/ground_truth.json").read_text())["parcels"]
    rows = pd.concat([pd.read_parquet(demo_run / f"results/stats/nulls_{m}.parquet") for m in MODELS])
    parcels = pd.concat([pd.read_csv(demo_run / f"results/stats/nulls_{m}_parcels.csv") for m in MODELS])
    assert (rows["n_null"] == P).all() and rows["p_perm"].between(1 / (P + 1), 1).all()
    n_layers = rows.groupby("src_model")["src_feature"].nunique()
    assert len(rows) == 4 * 12 * n_layers.sum()
    key = ["src_model", "tgt_model", "src_feature", "tgt_feature"]
    rows = rows.set_index(key)
    for parcel, planted in truth.items():
        if planted is None:
            continue
        for subject in ("subj01", "subj02", "subj05", "subj07"):
            r = rows.loc[(planted["model"], subject, planted["layer"], parcel)]
            assert r["significant"] and r["p_perm"] == pytest.approx(1 / (P + 1)), (parcel, subject)
        mine = parcels[(parcels.src_model == planted["model"]) & (parcels.tgt_feature == parcel)]
        assert (mine["fraction_significant"] > 0.5).all(), parcel
    # the noise-only parcel: exact p-values uniform; with nearly every other test a discovery, BH's
    # threshold approaches alpha, so its tests pass at about the nominal rate (7.5% in the demo), no more
    control = rows.xs("4", level="tgt_feature")
    assert 0.4 < control["p_perm"].mean() < 0.6
    assert (control["p_perm"] <= 1 / (P + 1) + 1e-12).mean() < 2 / (P + 1)
    assert control["significant"].mean() < 0.15
    planted_rate = rows[rows.index.get_level_values("tgt_feature") != "4"]["significant"].mean()
    assert planted_rate > 0.9 and planted_rate > 6 * control["significant"].mean()
    # the observed score is the table's, and one null mean recomputed here from the job's inputs
    table = pd.read_parquet(demo_run / "results/tables/vision_all.parquet", filters=[("metric", "==", "cka_36")])
    table = plain(table).set_index(key)["score"]
    vision = rows.loc[rows.index.get_level_values(0).isin(MODELS["vision"])]
    np.testing.assert_allclose(vision["score"], table.loc[vision.index], rtol=1e-5)  # other block sizes
    brain = read_brain(demo_run / "results/brain/paper/subj01.h5")
    _, layers, _ = read_features(demo_run / "results/features/paper/subj01/tf_efficientnet_lite0.h5")
    v1 = brain[1]["V1"]
    perms = permutations(len(v1), P, 0, "subj01")
    null = [score_matrices([layers[1]], [v1[p]], ["cka_36"])["cka_36"][0, 0] for p in perms]
    r = rows.loc[("tf_efficientnet_lite0", "subj01", 1, "V1")]
    assert r["null_mean"] == pytest.approx(np.mean(null), rel=1e-5)
    assert r["null_sd"] == pytest.approx(np.std(null, ddof=1), rel=1e-4)


def test_leadlag_table_matches_the_trajectory_figure_curves(demo_run):
    from brainalign.analysis.leadlag import crossing

    ll = pd.read_csv(demo_run / "results/stats/trajectory_leadlag.csv").set_index("statistic")
    traj = pd.read_csv(demo_run / "results/figures/trajectories/training_trajectories.csv").sort_values("step")
    assert set(ll.index) >= {"brain_t50", "brain_t90", "performance_t50", "lead_t50", "xcorr_lag+0"}
    assert (ll["run"] == "mini_nsd_cnn").all() and (ll["n_checkpoints"] == 4).all() and (ll["n_units"] == 24).all()
    x = traj["step"].to_numpy(float)
    for f in (50, 90):
        assert ll.loc[f"brain_t{f}", "estimate"] == pytest.approx(crossing(x, traj["brain_score"], f / 100)[0])
        assert ll.loc[f"performance_t{f}", "estimate"] == pytest.approx(crossing(x, traj["performance"], f / 100)[0])
        lead = ll.loc[f"lead_t{f}"]
        assert lead["ci_low"] <= lead["estimate"] <= lead["ci_high"]
    assert np.isnan(ll.loc["xcorr_lag+1", "estimate"])  # 2 pairs of changes only


@pytest.fixture(scope="module")
def demo_copy(demo_run, tmp_path_factory):
    """A private copy of the finished demo (mtimes and Snakemake's records kept) for the tests that change
    a run in place (a figure moved aside or rebuilt, the report): the shared run stays read only for every
    other test and xdist worker."""
    work = tmp_path_factory.mktemp("demo_copy") / "demo"
    shutil.copytree(demo_run, work, symlinks=True)
    return work


@pytest.mark.parametrize("rule", sorted(FIGURES))
def test_each_figure_alone_plans_only_its_own_job(demo_copy, rule):
    """With one figure gone, a dry-run of that figure plans exactly its job (the file is put back
    with its mtime, so the run stays complete; one real rebuild is the next test)."""
    png = demo_copy / FIGURES[rule]
    aside = png.with_name(png.name + ".aside")
    os.replace(png, aside)
    try:
        dry = snakemake(demo_copy, "-n", "--cores", "2", FIGURES[rule])
    finally:
        os.replace(aside, png)
    assert job_counts(dry.stdout) == {rule: 1, "total": 1}


def test_one_figure_rebuilds_alone_with_one_job(demo_copy):
    """The README's rebuild of one figure: only its job runs, it writes PNG, PDF and CSV, and the run is
    complete again after it."""
    target = FIGURES["figure_performance"]
    png = demo_copy / target
    png.unlink()
    run = snakemake(demo_copy, "--cores", "2", target)
    assert job_counts(run.stdout) == {"figure_performance": 1, "total": 1}
    assert png.stat().st_size > 10_000
    assert png.with_suffix(".pdf").stat().st_size > 1_000 and png.with_suffix(".csv").stat().st_size > 0
    assert "Nothing to be done" in snakemake(demo_copy, "-n", "--cores", "2").stdout


def _subject_scores(table, metric="cka_36"):
    """Test-local: per (model, subject) the max over ROIs per layer, then the mean over layers."""
    t = table[table["metric"] == metric]
    return t.groupby(["src_model", "tgt_model", "src_feature"])["score"].max().groupby(
        ["src_model", "tgt_model"]).mean().unstack("tgt_model")


def _roi_z(table, metric):
    """Test-local: per (ROI, subject) the mean over models of the best layer, z-scored across ROIs
    (population SD) within the subject."""
    t = table[table["metric"] == metric]
    roi = t.groupby(["tgt_feature", "tgt_model", "src_model"])["score"].max().groupby(
        ["tgt_feature", "tgt_model"]).mean().unstack("tgt_model")
    return (roi - roi.mean(axis=0)) / roi.std(axis=0, ddof=0)


def test_figure_numbers(demo_run):
    """The CSV beside each figure holds the numbers it draws, recomputed here with plain pandas
    from the tables (no function of the package)."""
    fig = demo_run / "results/figures"
    tables = {m: pd.read_parquet(demo_run / f"results/tables/{m}_all.parquet") for m in MODELS}
    checkpoints = [f"mini_nsd_cnn@epoch{e}" for e in (1, 2, 4, 8)]
    for modality, table in tables.items():  # the measured per-model scores, not the paper's
        scores = pd.read_csv(demo_run / f"results/stats/model_scores_{modality}.csv").set_index("model")
        assert set(scores.index) == set(MODELS[modality]) | (set(checkpoints) if modality == "vision" else set())
        for metric in ("cka_36", "cka_68"):
            want = _subject_scores(table, metric).mean(axis=1)
            np.testing.assert_allclose(scores.loc[want.index, metric], want, rtol=1e-9)
    traj = pd.read_csv(fig / "trajectories/training_trajectories.csv")
    assert traj["src_model"].tolist() == checkpoints and traj["step"].tolist() == [1, 2, 4, 8]
    assert traj["performance"].iloc[-1] > 50 > traj["performance"].iloc[0]  # held-out top-1 (%), 18 classes
    assert (traj["ci_low"] <= traj["brain_score"]).all() and (traj["brain_score"] <= traj["ci_high"]).all()
    ck = _subject_scores(tables["vision"]).loc[checkpoints]
    np.testing.assert_allclose(traj["brain_score"], ck.mean(axis=1), rtol=1e-9)
    cons = pd.read_csv(fig / "consistency/subject_consistency.csv")
    for modality, table in tables.items():
        per = _subject_scores(table)
        subjects = list(per.columns)
        got = cons[cons.modality == modality].pivot(index="subject_a", columns="subject_b", values="pearson_r")
        for a in subjects:
            for b in subjects:
                r = np.corrcoef(per[a], per[b])[0, 1]
                assert got.loc[a, b] == pytest.approx(r, abs=1e-9), (modality, a, b)
        assert (cons.loc[cons.modality == modality, "n_models"] == table["src_model"].nunique()).all()
    # vision models agree across subjects (planted signal, shared images), far from chance
    vision = cons[(cons.modality == "vision") & (cons.subject_a != cons.subject_b)]
    assert vision["pearson_r"].min() > 0.9
    metrics = pd.read_csv(fig / "metrics/metric_correlation.csv")
    assert len(metrics) == 2 * (len(EVERY_METRICS) + 1) ** 2
    for modality, table in tables.items():
        wide = table.pivot_table(index=["src_model", "tgt_model", "src_feature", "tgt_feature"], columns="metric",
                                 values="score")
        want = wide.corr(method="spearman")
        got = metrics[metrics.modality == modality].pivot(index="metric_a", columns="metric_b", values="spearman_rho")
        np.testing.assert_allclose(got.loc[want.index, want.columns], want, atol=1e-9)
    assert metrics.query("metric_a == 'cka_36' and metric_b == 'cka_44'")["spearman_rho"].min() > 0.9
    layers = pd.read_csv(fig / "layers/layerwise_profiles.csv")
    assert set(layers["relative_src_feature"]) <= set(range(8)) and layers["relative_src_feature"].nunique() >= 6
    keys = ["tgt_model", "yeo7", "relative_src_feature"]
    for modality, table in tables.items():
        t = table[table["metric"] == "cka_36"].astype({"tgt_model": str, "yeo7": str})
        want = t.groupby(keys)["score"].mean()
        got = layers[layers.modality == modality].set_index(keys)["score"]
        assert len(got) == len(want)
        np.testing.assert_allclose(got.loc[want.index], want, rtol=1e-12)
    kernel = pd.read_csv(fig / "kernel_size/change_28_68.csv", dtype={"tgt_feature": str})
    for modality, table in tables.items():
        change = _roi_z(table, "cka_68") - _roi_z(table, "cka_28")
        got = kernel[kernel.modality == modality].set_index("tgt_feature")
        np.testing.assert_allclose(got.loc[change.index.astype(str), "norm_mean"], change.mean(axis=1), rtol=1e-9)
        majority = np.maximum((change > 0).mean(axis=1), (change < 0).mean(axis=1))
        np.testing.assert_allclose(got.loc[change.index.astype(str), "norm_sign_consistency"], majority)
    assert sorted(kernel.groupby("modality").size()) == [12, 12]
    umap = pd.read_csv(fig / "umap/umap_profiles.csv")
    assert (umap["kind"] == "layer").sum() == sum(N_LAYERS.values()) and (umap["kind"] == "roi").sum() == N_PARCELS
    for modality, table in tables.items():
        for kind in ("score", "change"):
            brain = pd.read_csv(fig / f"brain_maps/{modality}_{kind}.csv", dtype={"tgt_feature": str})
            assert len(brain) == N_PARCELS and brain["on_atlas"].all() and brain["value"].notna().all()
        t = table[table["metric"] == "cka_36"]
        roi = t.groupby(["tgt_feature", "tgt_model", "src_model"])["score"].max().groupby("tgt_feature").mean()
        brain = pd.read_csv(fig / f"brain_maps/{modality}_score.csv", dtype={"tgt_feature": str})
        brain = brain.set_index("tgt_feature")
        np.testing.assert_allclose(brain.loc[roi.index.astype(str), "value"], roi, rtol=1e-9)


def test_report_builds_offline_with_every_figure(demo_copy):
    snakemake(demo_copy, "--cores", "1", "--report", "report.html")
    html = (demo_copy / "report.html").read_text(errors="replace")
    assert len(html) > 100_000
    for png in list((demo_copy / "results/figures").rglob("*.png")):
        assert png.name in html, png
    assert "Between-subject consistency" in html  # a caption


def test_the_docs_figures_are_the_demos_own_outputs(demo_run, tmp_path):
    """docs/figures/ is what tools/docs_figures.py (make docs-figures) makes of a demo run: the same
    images at the same sizes, one per figure family, each embedded in the docs; a results directory
    without the figures fails naming the first missing one."""
    import importlib.util

    from PIL import Image

    spec = importlib.util.spec_from_file_location("docs_figures", REPO / "tools" / "docs_figures.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    written = tool.write(demo_run / "results", tmp_path / "figures")
    committed = sorted((REPO / "docs" / "figures").glob("*.png"))
    # the demo's own, and the opt-in parts' where the run has them
    assert set(tool.FIGURES) <= {p.stem for p in written} <= set(tool.FIGURES) | set(tool.OPT_IN)
    assert [p.name for p in committed] == sorted(f"{n}.png" for n in [*tool.FIGURES, *tool.OPT_IN, *tool.SCREENSHOTS])
    for path in written:
        with Image.open(REPO / "docs" / "figures" / path.name) as a, Image.open(path) as b:
            assert a.size == b.size and a.width <= 960, path.name
    docs = "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    assert all(f"figures/{p.name}" in docs for p in committed)
    with pytest.raises(SystemExit, match="performance/brain_score_vs_benchmark.png not found"):
        tool.write(tmp_path / "empty", tmp_path / "out")


def plain(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its dictionary-encoded (categorical) columns as plain strings."""
    return table.astype({c: str for c in table.columns if isinstance(table[c].dtype, pd.CategoricalDtype)})


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_results_disk_fails_the_job_leaves_no_partial_file_and_the_rerun_completes(demo_run, tmp_path):
    work = copy_workflow(tmp_path / "w")
    results = work / "results"
    results.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(results)], check=True)
    try:
        target = "results/brain/paper/subj01.h5"  # ~1.2 MB: does not fit
        args = ["--cores", "1", "--config", f"nsd_root={demo_run / 'results/mini_nsd'}", "--", target]
        proc = snakemake(work, *args, check=False)
        assert proc.returncode != 0
        errors = [line for line in proc.stdout.splitlines() if line.startswith("brainalign: error:")]
        assert len(errors) == 1 and "no space left" in errors[0] and str(results / "brain/paper") in errors[0]
        assert not [p for p in (results / "brain").rglob("*") if p.is_file()]  # no truncated or temporary file
        subprocess.run(["mount", "-o", "remount,size=64m", str(results)], check=True)  # space freed
        snakemake(work, *args)
        ids_a, rois_a = read_brain(work / target)
        ids_b, rois_b = read_brain(demo_run / target)
        assert ids_a.tolist() == ids_b.tolist()
        for roi in rois_b:
            np.testing.assert_array_equal(rois_a[roi], rois_b[roi])
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)


def test_any_nsd_directory_runs_without_the_generator(demo_run, tmp_path):
    nsd = tmp_path / "my_nsd"
    shutil.copytree(demo_run / "results/mini_nsd", nsd)
    work = copy_workflow(tmp_path / "other")
    target = "results/brain/paper/subj02.h5"
    dry = snakemake(work, "-n", "--cores", "2", "--config", f"nsd_root={nsd}")
    counts = job_counts(dry.stdout)
    assert not {"mini_nsd", "mini_nsd_stimuli"} & set(counts) and counts["align"] == N_ALIGN
    snakemake(work, "--cores", "2", "--config", f"nsd_root={nsd}", "--", target)
    ids_a, rois_a = read_brain(work / target)
    ids_b, rois_b = read_brain(demo_run / target)
    assert ids_a.tolist() == ids_b.tolist()
    for roi in rois_b:
        np.testing.assert_array_equal(rois_a[roi], rois_b[roi])


@pytest.mark.parametrize(("override", "named"), [
    ("nsd_rot=/x", "nsd_rot"),
    ("split=halves", "halves"),
    ("subjects=subj01", "subjects"),
    ("subjects=[subj01,subj01]", "subjects"),
    ("subjects=[]", "subjects"),
    ("subjects=[subj09]", "subj09"),
    ("sessions={last:3}", "sessions"),
    ("device=gpu", "gpu"),
])
def test_bad_config_fails_at_start_naming_the_key(tmp_path, override, named):
    work = copy_workflow(tmp_path)
    proc = snakemake(work, "-n", "--cores", "2", "--config", override, check=False)
    assert proc.returncode != 0
    assert named in proc.stdout
    assert not (work / "results").exists()


def test_unknown_model_and_metric_fail_at_start(tmp_path):
    work = copy_workflow(tmp_path)
    proc = snakemake(work, "-n", "--cores", "2", "--config", "vision_models=[resnet_9000]", check=False)
    assert proc.returncode != 0 and "resnet_9000" in proc.stdout and "vision_models" in proc.stdout
    proc = snakemake(work, "-n", "--cores", "2", "--config", "metrics=[cka_37]", check=False)
    assert proc.returncode != 0 and "cka_37" in proc.stdout


def test_missing_nsd_file_fails_with_its_path(tmp_path):
    nsd = tmp_path / "empty_nsd"
    nsd.mkdir()
    work = copy_workflow(tmp_path / "w")
    proc = snakemake(work, "-n", "--cores", "2", "--config", f"nsd_root={nsd}", check=False)
    assert proc.returncode != 0
    assert str(nsd / "nsddata/experiments/nsd/nsd_expdesign.mat") in proc.stdout


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """One precomputed-mode run shared by its tests: the README's targeted command, then the rest of
    the mode's targets; {"targeted": job counts, "rest": job counts, "work": the directory}."""
    work = copy_workflow(tmp_path_factory.mktemp("paper"))
    targeted = snakemake(work, "--cores", "2", "results/paper/stats/correlation_sigma36.csv",
                         "--configfile", "config/paper.yaml")
    rest = snakemake(work, "--cores", "2", "--configfile", "config/paper.yaml")
    return {"targeted": job_counts(targeted.stdout), "rest": job_counts(rest.stdout), "work": work}


def test_precomputed_mode_reproduces_the_papers_statistics(paper_run):
    """config/paper.yaml: the headline table from the paper's own per-model scores, no fMRI."""
    from brainalign.analysis.stats import load_paper_target

    work = paper_run["work"]
    assert paper_run["targeted"] == {"model_scores": 2, "correlation_stats": 1, "total": 3}
    got = pd.read_csv(work / "results/paper/stats/correlation_sigma36.csv", index_col=0, dtype=str,
                      keep_default_na=False)
    want = load_paper_target("correlation_36.csv")
    assert got.columns.tolist() == want.columns.tolist()
    assert got[["Model Category", "Metric", "Model Count"]].equals(want[["Model Category", "Metric", "Model Count"]])
    headline = got.set_index("Metric")
    assert headline.loc["Average ⬆️", "Pearson r"] == "0.89"  # r = 0.885 (language, n = 36)
    assert headline.loc["imagenet", "Pearson r"] == "0.53"  # r = 0.531 (vision, n = 594)
    # Every row to 2 decimals, but two the paper cannot define: its vision "score" CI is NaN
    # (float rounding put r above 1), which also makes its Average CI NaN, and its
    # "Combined (Standardized)" row is not described anywhere.
    numeric = pd.read_csv(work / "results/paper/stats/correlation_sigma36_numeric.csv")
    assert numeric.loc[numeric.metric == "Average ⬆️", "pearson_r"].item() == pytest.approx(0.885, abs=5e-4)
    assert numeric.loc[numeric.metric == "imagenet", "pearson_r"].item() == pytest.approx(0.5305, abs=5e-4)
    comparable = ~want["Metric"].isin(["Combined"])
    for col in ("Pearson r", "Spearman ρ", "Spearman 95% CI"):
        assert got.loc[comparable, col].tolist() == want.loc[comparable, col].tolist(), col
    ci = ~want["Metric"].isin(["Combined", "score", "Average"])
    assert got.loc[ci, "95% CI"].tolist() == want.loc[ci, "95% CI"].tolist()


def test_precomputed_mode_builds_every_figure_it_can(paper_run):
    """config/paper.yaml: the figures that need only the paper's published tables, each its own job,
    under results/paper (a measured run's results/stats and results/figures are not touched)."""
    work = paper_run["work"]
    assert paper_run["rest"] == {"correlation_stats": 10, "figure_performance": 1, "figure_performance_sigma": 1,
                                 "figure_consistency": 1, "figure_kernel_size": 1, "robustness": 1,
                                 "figure_robustness": 1, "headline_by_metric": 1, "figure_headline_by_metric": 1,
                                 "all": 1, "total": 19}
    assert sorted(p.name for p in (work / "results").iterdir()) == ["paper"]
    fig = work / "results/paper/figures"
    for png in ("performance/brain_score_vs_benchmark.png", "performance/correlation_by_sigma.png",
                "consistency/subject_consistency.png", "kernel_size/change_28_68.png",
                "robustness/robustness_forest.png", "metric_families/headline_by_metric.png"):
        assert (fig / png).stat().st_size > 10_000, png
    # the metric-family table on the paper's published scores: its 11 kernel sizes, the headline r
    by_metric = pd.read_csv(work / "results/paper/stats/headline_by_metric.csv").set_index(["modality", "metric"])
    assert len(by_metric) == 2 * 11
    assert by_metric.loc[("vision", "cka_36"), "pearson_r"] == pytest.approx(0.5305, abs=5e-4)
    assert by_metric.loc[("language", "cka_36"), "pearson_r"] == pytest.approx(0.885, abs=5e-4)
    # the figures show the paper's published tables: read here from the shipped files themselves,
    # every cell; the kernel-size signs also recomputed from the paper's per-ROI scores
    shipped = REPO / "src/brainalign/resources/paper_tables"
    cons = pd.read_csv(fig / "consistency/subject_consistency.csv")
    for modality, name in (("vision", "vision_corr.csv"), ("language", "lang_corr.csv")):
        want = pd.read_csv(shipped / name, index_col=0)
        got = cons[cons.modality == modality].pivot(index="subject_a", columns="subject_b", values="pearson_r")
        assert got.shape == (4, 4) == want.shape
        for a in want.index:
            for b in want.columns:
                assert got.loc[f"subj{a[1:]}", f"subj{b[1:]}"] == pytest.approx(want.loc[a, b]), (modality, a, b)
    sigma = pd.read_csv(fig / "performance/correlation_by_sigma.csv")
    at36 = sigma[(sigma.sigma == 36) & (sigma.benchmark == "imagenet")]
    assert at36["pearson_r"].item() == pytest.approx(0.5305, abs=5e-4) and at36["n"].item() == 594
    kernel = pd.read_csv(fig / "kernel_size/change_28_68.csv", dtype={"tgt_feature": str})
    for modality in ("vision", "language"):
        got = kernel[kernel.modality == modality].set_index("tgt_feature")
        want = pd.read_csv(shipped / f"kernel_size_{modality}/28_68_consistency.csv", index_col=0,
                           dtype={"tgt_feature": str}).set_index("tgt_feature")
        assert len(got) == len(want) == 180
        np.testing.assert_allclose(got.loc[want.index, "norm_mean"], want["norm_mean"])
        rois = pd.read_csv(shipped / f"brain_regions/{modality}.csv", dtype={"tgt_feature": str})
        raw = rois.pivot_table(index="tgt_feature", columns=["metric", "tgt_model"], values="score")
        change = raw["cka_68"] - raw["cka_28"]
        majority = np.maximum((change > 0).mean(axis=1), (change < 0).mean(axis=1))
        np.testing.assert_allclose(got.loc[majority.index, "raw_sign_consistency"], majority)

    # robustness: recomputed here from the paper's scores and the registry YAML with plain pandas
    import yaml

    robust = pd.read_csv(work / "results/paper/stats/robustness_sigma36.csv").set_index(["modality", "benchmark"])
    for modality, bench, params in (("vision", "imagenet", "#Params (M)"), ("language", "Average ⬆️", "#Params (B)")):
        scores = pd.read_csv(work / f"results/paper/stats/model_scores_{modality}.csv")
        registry = yaml.safe_load((work / f"config/registry/paper_{modality}.yaml").read_text())
        scores["family"] = [registry.get(m, {}).get("family", m) for m in scores["model"]]
        d = scores.dropna(subset=["cka_36", bench])
        row = robust.loc[(modality, bench)]
        assert row["n_models"] == len(d) and row["n_families"] == d["family"].nunique()
        means = d.groupby("family")[["cka_36", bench]].mean()
        assert row["family_mean_r"] == pytest.approx(means["cka_36"].corr(means[bench]), abs=1e-9)
        x, y, z = d["cka_36"], d[bench], np.log(d[params])
        rxy, rxz, ryz = x.corr(y), x.corr(z), y.corr(z)
        partial = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
        assert row["partial_r_log_params"] == pytest.approx(partial, abs=1e-9)
        assert -1 <= row["spearman_bw_ci_low"] < row["spearman_rho"] < row["spearman_bw_ci_high"] <= 1
        assert row["cluster_bootstrap_ci_high"] - row["cluster_bootstrap_ci_low"] > 0
    assert robust.loc[("language", "Average ⬆️"), "paper_spearman_ci_high"] > 1  # the paper's [0.67, 1.09]


def test_tables_mode_builds_statistics_and_figures_from_planted_tables(tmp_path):
    """tables_from=DIR: the paper's "Option 2" tables (here synthetic, with planted per-model scores and
    no benchmark columns) give the statistics and every figure family, without NSD or models."""
    from scipy.stats import pearsonr

    from brainalign.bench.synthetic import write_tables
    from brainalign.resources import language_benchmarks, vision_benchmarks

    tables = tmp_path / "tables"
    planted = write_tables(tables, 14, 6, ["cka_28", "cka_36", "cka_68", "mutual_knn_20"], n_rois=16, seed=3,
                           benchmarks=False)
    work = copy_workflow(tmp_path / "w")
    run = snakemake(work, "--cores", "2", "--config", f"tables_from={tables}")
    counts = job_counts(run.stdout)
    assert counts["check_table"] == 4 and counts["model_scores"] == 2 and counts["correlation_stats"] == 3
    assert "align" not in counts and "mini_nsd" not in counts
    out = work / "results/from_tables"
    assert not (work / "results/tables").exists() and not (work / "results/mini_nsd").exists()
    numeric = pd.read_csv(out / "stats/correlation_sigma36_numeric.csv")
    for mod, bench, col in (("vision", vision_benchmarks(), "imagenet"),
                            ("language", language_benchmarks(), "Average ⬆️")):
        truth = planted[f"{mod}_all"].set_index("model")["cka_36"]
        b = bench.set_index("model")[col].reindex(truth.index)  # filled by model name: the table had none
        ok = b.notna()
        assert ok.sum() >= 5
        row = numeric[numeric.metric == col].iloc[0]
        assert row["n"] == ok.sum()
        assert row["pearson_r"] == pytest.approx(pearsonr(truth[ok], b[ok]).statistic, abs=1e-9)
        scores = pd.read_csv(out / f"stats/model_scores_{mod}.csv").set_index("model")
        np.testing.assert_allclose(scores.loc[truth.index, "cka_36"], truth, rtol=1e-12)
    for stem in ("performance/brain_score_vs_benchmark", "performance/correlation_by_sigma",
                 "consistency/subject_consistency", "metrics/metric_correlation", "layers/layerwise_profiles",
                 "kernel_size/change_28_68", "umap/umap_profiles", "trajectories/training_trajectories",
                 "robustness/robustness_forest", "metric_families/headline_by_metric"):
        assert (out / f"figures/{stem}.png").stat().st_size > 10_000, stem
    by_metric = pd.read_csv(out / "stats/headline_by_metric.csv")
    assert sorted(by_metric.groupby("modality")["metric"].apply(tuple).to_dict().items()) == [
        (mod, ("cka_28", "cka_36", "cka_68", "mutual_knn_20")) for mod in ("language", "vision")]
    robust = pd.read_csv(out / "stats/robustness_sigma36.csv").set_index(["modality", "benchmark"])
    layers = pd.read_csv(out / "stats/model_scores_vision.csv")["n_layers"]
    assert layers.nunique() > 1 and robust.loc[("vision", "imagenet"), "n_partial_layers"] == layers.notna().sum()
    traj = pd.read_csv(out / "figures/trajectories/training_trajectories.csv")
    assert sorted(set(traj["run"])) == ["EleutherAI/pythia-70m-deduped", "mixnet_s.run0"]
    lang = traj[traj.run == "EleutherAI/pythia-70m-deduped"].sort_values("step")
    want = planted["language_trained"].set_index("model")["cka_36"]
    np.testing.assert_allclose(lang.set_index("src_model").loc[want.index, "brain_score"], want, rtol=1e-12)
    # the explorer of tables mode: a page per model; no brain maps (no surface atlas beside the tables)
    assert counts["explorer"] == 1
    site = out / "explorer"
    assert len(list((site / "models").glob("*.html"))) == 14 + 6 and not list(site.rglob("*.png"))
    assert "No brain map: the run has no surface atlas." in next((site / "models").glob("*.html")).read_text()
    assert "Nothing to be done" in snakemake(work, "-n", "--cores", "2", "--config", f"tables_from={tables}").stdout


def test_tables_mode_rejects_a_bad_table_at_start(tmp_path):
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame({"src_model": ["a"], "tgt_model": ["subj01"], "metric": ["cka_36"], "src_feature": [0],
                  "tgt_feature": ["V1"], "score": [0.1], "relative_src_feature": [0]}).to_parquet(
        tables / "vision_all.parquet")
    work = copy_workflow(tmp_path / "w")
    start = time.monotonic()
    proc = snakemake(work, "-n", "--cores", "2", "--config", f"tables_from={tables}", check=False)
    assert proc.returncode != 0 and time.monotonic() - start < 60
    assert f"{tables / 'vision_all.parquet'}: column 'yeo7' is missing" in proc.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = snakemake(work, "-n", "--cores", "2", "--config", f"tables_from={empty}", check=False)
    assert proc.returncode != 0 and "holds neither vision_all.parquet nor language_all.parquet" in proc.stdout


def test_tables_mode_on_a_measured_runs_tables_gives_its_numbers(demo_run, tmp_path):
    """tables_from=results/tables of a finished run (and its NSD's fsaverage atlas for the brain maps):
    the same model scores, statistics and figure numbers as the measured run itself."""
    work = copy_workflow(tmp_path / "w")
    tables, nsd = demo_run / "results/tables", demo_run / "results/mini_nsd"
    config = ["--config", f"tables_from={tables}", f"nsd_root={nsd}"]
    counts = job_counts(snakemake(work, "-n", "--cores", "2", *config).stdout)
    assert counts["figure_brain_map"] == 4 and not {"align", "mini_nsd", "mini_nsd_stimuli", "features"} & set(counts)
    stems = ("consistency/subject_consistency", "metrics/metric_correlation", "layers/layerwise_profiles",
             "kernel_size/change_28_68", "brain_maps/vision_score", "brain_maps/language_change")
    out, measured = work / "results/from_tables", demo_run / "results"
    # the compared outputs only (the whole mode is run by the planted-tables test)
    targets = [f"results/from_tables/figures/{stem}.csv" for stem in stems]
    targets.append("results/from_tables/stats/correlation_sigma36_numeric.csv")
    snakemake(work, "--cores", "2", *targets, *config)
    for mod in MODELS:
        got = pd.read_csv(out / f"stats/model_scores_{mod}.csv").set_index("model")
        want = pd.read_csv(measured / f"stats/model_scores_{mod}.csv").set_index("model")
        pd.testing.assert_frame_equal(got.loc[want.index, want.columns], want, rtol=1e-12)
    got = pd.read_csv(out / "stats/correlation_sigma36_numeric.csv")
    want = pd.read_csv(measured / "stats/correlation_sigma36_numeric.csv")
    pd.testing.assert_frame_equal(got, want, rtol=1e-10)
    for stem in stems:
        got, want = pd.read_csv(out / f"figures/{stem}.csv"), pd.read_csv(measured / f"figures/{stem}.csv")
        assert got.shape == want.shape, stem
        pd.testing.assert_frame_equal(got, want, rtol=1e-9, check_dtype=False, obj=stem)


def test_a_release_without_freesurfer_folder_plans_around_it_at_start(demo_run, tmp_path):
    """An NSD-layout directory without nsddata/freesurfer (and not a mini-NSD): the models trained on
    the mini-NSD and the brain maps are left out at DAG build, one warning line each; ingest runs."""
    nsd = tmp_path / "nsd"
    shutil.copytree(demo_run / "results/mini_nsd", nsd,
                    ignore=shutil.ignore_patterns("freesurfer", "ground_truth.json"))
    work = copy_workflow(tmp_path / "w")
    dry = snakemake(work, "-n", "--cores", "2", "--config", f"nsd_root={nsd}")
    counts = job_counts(dry.stdout)
    assert "figure_brain_map" not in counts and "figure_trajectories" not in counts
    assert not any(rule.startswith("train_") for rule in counts)
    assert counts["align"] == 4 * 2  # one batch of the 5 vision models, one of the 3 language models
    warnings = [line for line in dry.stdout.splitlines() if line.startswith("brainalign: warning:")]
    assert len(warnings) == 2, warnings
    assert "mini_nsd_cnn@epoch1" in warnings[0] and "HCP_MMP1.mgz" in warnings[1]
    target = "results/brain/paper/subj02.h5"
    snakemake(work, "--cores", "2", "--config", f"nsd_root={nsd}", "--", target)
    ids_a, rois_a = read_brain(work / target)
    ids_b, rois_b = read_brain(demo_run / target)
    assert ids_a.tolist() == ids_b.tolist() and list(rois_a) == list(rois_b)
    for roi in rois_b:
        np.testing.assert_array_equal(rois_a[roi], rois_b[roi])


def test_convergence_target_builds_model_model_tables_stats_and_figure(demo_run, tmp_path):
    """`snakemake results/figures/convergence/convergence.png` on a finished demo, on the brain run's split
    (convergence split paper: its features are reused, no features job): two converge jobs (3 language models x
    2 batches of vision models), the table, statistics and figure, and nothing of the brain side again. Trained
    vision x trained language pairs align above every pair that involves an untrained copy; tables mode reads
    the table to the same numbers. (The default split, shared1000, extracts its own features:
    tests/test_small_release.py.)"""
    work = tmp_path / "w"
    shutil.copytree(demo_run, work, symlinks=True)
    target = "results/figures/convergence/convergence.png"
    split = ["--config", "convergence={split: paper}"]
    run = snakemake(work, "--cores", "2", *split, "--", target)
    counts = job_counts(run.stdout)
    assert counts == {"converge": 2, "convergence_table": 1, "convergence_stats": 1, "figure_convergence": 1,
                      "total": 5}, counts
    table = pd.read_parquet(work / "results/tables/convergence_language_vision.parquet")
    assert set(table["metric"]) == {"mutual_knn_10", "cka_36", "linear_cka"}
    vision_models = MODELS["vision"] + [f"mini_nsd_cnn@epoch{e}" for e in (1, 2, 4, 8)]
    assert set(table["src_model"]) == set(MODELS["language"]) and set(table["tgt_model"]) == set(vision_models)
    sizes = table.groupby(["src_model", "tgt_model"]).size()
    first = table.groupby(["src_model", "tgt_model"])[["n_layers", "tgt_n_layers"]].first()
    assert (sizes == first["n_layers"] * first["tgt_n_layers"] * 3).all()

    # the planted cross-modal truth: each stimulus's photo (ground_truth.json) is what its caption describes
    latent = json.loads((work / "results/mini_nsd/ground_truth.json").read_text())["stimuli"]
    stimuli = pd.read_csv(work / "results/stimuli/paper/subj01.csv")  # convergence subject: the first
    assert len(stimuli) > 60 and all(latent["photos"][latent["photo"][i - 1]] in caption
                                     for i, caption in zip(stimuli["nsd_id"], stimuli["caption"], strict=True))
    pairs = pd.read_csv(work / "results/stats/convergence/pairs.csv")
    mk = pairs[pairs["metric"] == "mutual_knn_10"].set_index(["src_model", "tgt_model"])["score"]
    trained = [("all-MiniLM-L6-v2", v) for v in ("tf_efficientnet_lite0", "tf_efficientnet_lite1",
                                                  "tf_efficientnet_lite2")]
    untrained = [p for p in mk.index if ".untrained" in p[0] or ".untrained" in p[1]]
    assert len(untrained) == 2 * len(vision_models) + 1
    assert mk[trained].min() > mk[untrained].max() + 0.1, (mk[trained], mk[untrained].max())
    # pooled = max over layer pairs, recomputed from the table
    t = table[table["metric"] == "mutual_knn_10"].groupby(["src_model", "tgt_model"])["score"].max()
    assert np.allclose(mk.sort_index(), t.reindex(mk.sort_index().index), atol=0)

    models = pd.read_csv(work / "results/stats/convergence/models.csv")
    vision = models[(models["modality"] == "vision") & (models["metric"] == "mutual_knn_10")].set_index("model")
    assert vision.loc["tf_efficientnet_lite1", "convergence"] == pytest.approx(
        mk.xs("tf_efficientnet_lite1", level="tgt_model").mean(), abs=1e-12)
    brain = pd.read_csv(demo_run / "results/stats/model_scores_vision.csv").set_index("model")["cka_36"]
    assert np.allclose(vision["brain_score"], brain.reindex(vision.index), atol=1e-12)
    corr = pd.read_csv(work / "results/stats/convergence/correlations.csv")
    row = corr[(corr["modality"] == "vision") & (corr["metric"] == "mutual_knn_10")
               & (corr["against"] == "brain_score")].iloc[0]
    assert row["pearson_r"] == pytest.approx(np.corrcoef(vision["convergence"], vision["brain_score"])[0, 1],
                                             abs=1e-12)
    for ext in ("png", "pdf", "csv"):
        assert (work / f"results/figures/convergence/convergence.{ext}").stat().st_size > 500
    assert "Nothing to be done" in snakemake(work, "-n", "--cores", "2", *split, "--", target).stdout
    # the docs' convergence figure (tools/docs_figures.py, OPT_IN: drawn from a demo on the default split) is
    # this figure's layout
    spec = importlib.util.spec_from_file_location("docs_figures", REPO / "tools" / "docs_figures.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    written = {p.name: p for p in tool.write(work / "results", tmp_path / "docs_figures")}
    from PIL import Image

    with Image.open(written["convergence.png"]) as a, Image.open(REPO / "docs/figures/convergence.png") as b:
        assert a.size == b.size

    # tables mode: the brain tables and the convergence table of this run give the same statistics
    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("vision_all", "language_all", "convergence_language_vision"):
        shutil.copy2(work / f"results/tables/{name}.parquet", tables / f"{name}.parquet")
    again = copy_workflow(tmp_path / "t")
    snakemake(again, "--cores", "2", "--config", f"tables_from={tables}", "--",
              "results/from_tables/stats/convergence/models.csv")
    got = pd.read_csv(again / "results/from_tables/stats/convergence/models.csv")
    pd.testing.assert_frame_equal(got, models, rtol=1e-12)
