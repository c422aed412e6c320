"""Model-to-model convergence: metric names with any k, the job plan, the converge job against
``brainalign.align``, mutual k-NN against platonic-rep's definition, the tables and their statistics,
and the features job's reuse of a stimulus set it has already extracted."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from brainalign.alignment.convergence import job_frame, job_pairs, kind_modalities
from brainalign.alignment.metrics import METRICS, align, metric_spec, resolve_metrics, score_matrices
from brainalign.analysis import convergence as conv
from brainalign.io import InputError
from brainalign.models.features import read_features, write_features

REPO = Path(__file__).resolve().parents[1]


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(0)) / (x.std(0, ddof=1) + 1e-8)


def platonic_mutual_knn(feats_a: torch.Tensor, feats_b: torch.Tensor, topk: int) -> float:
    """platonic-rep's ``mutual_knn`` (metrics.py): top-k by inner product with the diagonal filled
    with -1e8, 0/1 masks, the mean over samples of the masks' overlap / k."""
    def knn(feats):
        return (feats @ feats.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :topk]

    knn_a, knn_b = knn(feats_a), knn(feats_b)
    n = knn_a.shape[0]
    rows = torch.arange(n).unsqueeze(1)
    mask_a, mask_b = torch.zeros(n, n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64)  # theirs: float32
    mask_a[rows, knn_a] = 1.0
    mask_b[rows, knn_b] = 1.0
    return ((mask_a * mask_b).sum(dim=1) / topk).mean().item()


def test_metric_names_take_any_parameter():
    assert metric_spec("mutual_knn_10") == METRICS["mutual_knn_20"].__class__("mutual_knn_10", "mutual_knn", 10)
    assert (metric_spec("cknna_25").family, metric_spec("cknna_25").param) == ("cknna", 25)
    assert (metric_spec("cycle_knn_7").family, metric_spec("cycle_knn_7").param) == ("cycle_knn", 7)
    assert metric_spec("cka_36") is METRICS["cka_36"]
    for bad in ("mutual_knn_0", "mutual_knn_", "mutual_knn_1x", "rsa_pearson_3", "cka_37", "cka_-1"):
        assert metric_spec(bad) is None
    assert [s.name for s in resolve_metrics(["mutual_knn_10", "cka_36", "mutual_knn_10"])] == ["mutual_knn_10",
                                                                                              "cka_36"]
    with pytest.raises(ValueError, match="unknown metric 'mutual_knn_0'.*mutual_knn_10"):
        resolve_metrics(["mutual_knn_0"])


def test_mutual_knn_10_equals_platonic_reps_definition():
    """On continuous data (no ties), the engine's mutual_knn_10 is platonic-rep's mutual_knn with topk=10 on
    the z-scored features (the engine's convention: columns z-scored, neighbours by inner product)."""
    rng = np.random.default_rng(0)
    n = 150
    latent = rng.standard_normal((n, 6))
    a = [latent @ rng.standard_normal((6, 40)) + 0.8 * rng.standard_normal((n, 40)) for _ in range(3)]
    b = [latent @ rng.standard_normal((6, 25)) + s * rng.standard_normal((n, 25)) for s in (0.3, 1.5)]
    got = score_matrices(a, b, ["mutual_knn_10", "mutual_knn_7"])
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            za, zb = torch.from_numpy(zscore(x)), torch.from_numpy(zscore(y))
            assert got["mutual_knn_10"][i, j] == pytest.approx(platonic_mutual_knn(za, zb, 10), abs=1e-12)
            assert got["mutual_knn_7"][i, j] == pytest.approx(platonic_mutual_knn(za, zb, 7), abs=1e-12)
    # the more shared the latent, the higher the score: not a constant
    assert got["mutual_knn_10"][:, 0].min() > got["mutual_knn_10"][:, 1].max()


def test_job_pairs_cross_and_within():
    batches = {"vision": ["v0+7", "v8"], "language": ["l0+2"]}
    assert job_pairs(batches, ["language_vision"]) == [("language_vision", "l0+2", "v0+7"),
                                                       ("language_vision", "l0+2", "v8")]
    assert job_pairs(batches, ["vision_language"]) == [("vision_language", "v0+7", "l0+2"),
                                                       ("vision_language", "v8", "l0+2")]
    assert job_pairs({"vision": ["a", "b", "c"]}, ["vision_vision"]) == [
        ("vision_vision", x, y) for x, y in (("a", "a"), ("a", "b"), ("a", "c"), ("b", "b"), ("b", "c"),
                                             ("c", "c"))]
    assert kind_modalities("language_vision") == ("language", "vision")
    with pytest.raises(ValueError, match="unknown pair kind"):
        kind_modalities("vision_brain")


def test_job_frame_rows_and_within_batches_score_each_unordered_pair_once():
    layers = {"a": 2, "b": 3, "c": 1}
    models = list(layers)
    n = sum(layers.values())
    mat = np.arange(n * n, dtype=float).reshape(n, n)
    frame = job_frame({"m": mat}, models, list(layers.values()), models, list(layers.values()), within=True)
    pairs = set(map(tuple, frame[["src_model", "tgt_model"]].drop_duplicates().to_numpy()))
    assert pairs == {("a", "b"), ("a", "c"), ("b", "c")}
    ab = frame[(frame["src_model"] == "a") & (frame["tgt_model"] == "b")]
    assert len(ab) == 2 * 3 and (ab["n_layers"] == 2).all() and (ab["tgt_n_layers"] == 3).all()
    # (layer 1 of a, layer 2 of b) is row 1, column 2 + 2 of the engine's matrix
    assert ab[(ab["src_feature"] == 1) & (ab["tgt_feature"] == 2)]["score"].item() == mat[1, 4]
    cross = job_frame({"m": mat[:2, 2:]}, ["a"], [2], ["b", "c"], [3, 1])
    assert len(cross) == 2 * 3 + 2 * 1 and cross["score"].tolist()[:3] == mat[0, 2:5].tolist()


def _features(path, model, ids, layers):
    write_features(path, model, np.asarray(ids), [f"l{i}" for i in range(len(layers))], layers, {})
    return path


def test_converge_job_equals_align_on_the_two_feature_files(tmp_path):
    """The engine's model-model scores are brainalign.align's on the same (float16-stored) layers."""
    from brainalign.pipeline import converge_job

    rng = np.random.default_rng(1)
    n, ids = 80, np.arange(1, 81)
    shared = rng.standard_normal((n, 5))
    src = {m: [shared @ rng.standard_normal((5, d)) + rng.standard_normal((n, d)) for d in dims]
           for m, dims in (("lang_a", (16, 24, 12)), ("lang_b", (10,)))}
    tgt = {m: [shared @ rng.standard_normal((5, d)) + 2 * rng.standard_normal((n, d)) for d in dims]
           for m, dims in (("vis_a", (8, 30)),)}
    files = {m: _features(tmp_path / f"{m}.h5", m, ids, x) for m, x in {**src, **tgt}.items()}
    out = tmp_path / "job.parquet"
    metrics = ["mutual_knn_10", "cka_36", "linear_cka", "cycle_knn_10"]
    converge_job([files["lang_a"], files["lang_b"]], ["lang_a", "lang_b"], [files["vis_a"]], ["vis_a"], metrics,
                 "cpu", out)
    got = pd.read_parquet(out)
    assert len(got) == (3 + 1) * 2 * len(metrics)
    for m in src:
        source = {f"{m}:{i}": x for i, x in enumerate(read_features(files[m])[1])}
        target = {f"vis_a:{i}": x for i, x in enumerate(read_features(files["vis_a"])[1])}
        want = align(source, target, metrics)
        for _, row in want.iterrows():
            hit = got[(got["src_model"] == m) & (got["metric"] == row["metric"])
                      & (got["src_feature"] == int(row["source"].split(":")[1]))
                      & (got["tgt_feature"] == int(row["target"].split(":")[1]))]
            assert hit["score"].item() == pytest.approx(row["score"], abs=1e-6)


def test_converge_job_names_the_files_when_a_k_is_too_large(tmp_path):
    from brainalign.pipeline import converge_job

    rng = np.random.default_rng(2)
    a = _features(tmp_path / "a.h5", "a", np.arange(1, 13), [rng.standard_normal((12, 4))])
    b = _features(tmp_path / "b.h5", "b", np.arange(1, 13), [rng.standard_normal((12, 4))])
    with pytest.raises(InputError, match=r"a \.\. \(1\) x b \.\. \(1\) on .*a\.h5.*convergence: metrics"):
        converge_job([a], ["a"], [b], ["b"], ["mutual_knn_20"], "cpu", tmp_path / "o.parquet")
    c = _features(tmp_path / "c.h5", "c", np.arange(2, 14), [rng.standard_normal((12, 4))])
    with pytest.raises(InputError, match="stimulus ids differ"):
        converge_job([a], ["a"], [c], ["c"], ["cka_36"], "cpu", tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


@pytest.fixture
def table(tmp_path):
    """A convergence table aggregated from two job files: 3 language x 2 vision models, random scores."""
    rng = np.random.default_rng(3)
    layers = {"l1": 3, "l2": 2, "l3": 4, "v1": 2, "v2": 5}
    jobs = []
    for i, (srcs, tgts) in enumerate(((["l1", "l2"], ["v1", "v2"]), (["l3"], ["v1", "v2"]))):
        S, T = sum(layers[m] for m in srcs), sum(layers[m] for m in tgts)
        mats = {m: rng.random((S, T)) for m in ("cka_36", "mutual_knn_10")}
        frame = job_frame(mats, srcs, [layers[m] for m in srcs], tgts, [layers[m] for m in tgts])
        path = tmp_path / f"job{i}.parquet"
        frame.to_parquet(path)
        jobs.append(path)
    out = tmp_path / "convergence_language_vision.parquet"
    conv.aggregate_convergence(jobs, out)
    return out


def test_aggregate_and_pooled_pair_scores_equal_pandas(table):
    df = pd.read_parquet(table)
    assert len(df) == (3 + 2 + 4) * (2 + 5) * 2 and not df.duplicated(["src_model", "tgt_model", "metric",
                                                                         "src_feature", "tgt_feature"]).any()
    key = ["src_model", "tgt_model", "metric"]
    d = df.astype({c: str for c in key})
    got = conv.pair_scores(table, "max").set_index(key)
    want = d.loc[d.groupby(key)["score"].idxmax()].set_index(key)
    assert np.allclose(got["score"], want["score"].reindex(got.index), atol=0, rtol=0)
    assert (got["src_layer"] == want["src_feature"].reindex(got.index)).all()
    assert (got["tgt_layer"] == want["tgt_feature"].reindex(got.index)).all()
    mean = conv.pair_scores(table, "mean").set_index(key)["score"]
    assert np.allclose(mean, d.groupby(key)["score"].mean().reindex(mean.index), atol=1e-12)
    last = conv.pair_scores(table, "last").set_index(key)["score"]
    tail = d[(d["src_feature"] == d["n_layers"] - 1) & (d["tgt_feature"] == d["tgt_n_layers"] - 1)]
    assert np.allclose(last, tail.set_index(key)["score"].reindex(last.index), atol=0)
    with pytest.raises(InputError, match="convergence: pooling"):
        conv.pair_scores(table, "median")


def test_aggregate_names_a_broken_job_file(tmp_path, table):
    df = pd.read_parquet(table)
    bad = tmp_path / "bad.parquet"
    df.iloc[1:].to_parquet(bad)  # one row missing
    with pytest.raises(InputError, match=r"bad\.parquet: l1 x v1 has 11 rows, expected 3 x 2 layers x 2"):
        conv.aggregate_convergence([bad], tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()
    with pytest.raises(InputError, match="no column"):
        df.drop(columns="tgt_n_layers").to_parquet(bad)
        conv.check_convergence_table(bad)


def test_model_convergence_and_its_correlations_against_an_independent_computation(table):
    pairs = conv.pair_scores(table, "max")
    models = conv.model_convergence({"language_vision": pairs})
    lang = models[(models["modality"] == "language") & (models["metric"] == "cka_36")].set_index("model")
    p = pairs[pairs["metric"] == "cka_36"]
    assert lang.loc["l2", "convergence"] == pytest.approx(p[p["src_model"] == "l2"]["score"].mean(), abs=1e-15)
    vis = models[(models["modality"] == "vision") & (models["metric"] == "cka_36")].set_index("model")
    assert vis.loc["v2", "convergence"] == pytest.approx(p[p["tgt_model"] == "v2"]["score"].mean(), abs=1e-15)
    assert (vis["n_partners"] == 3).all() and (lang["n_partners"] == 2).all()

    # six language models: enough for the correlations (n >= 4); benchmark and brain score independent
    rng = np.random.default_rng(4)
    names = [f"m{i}" for i in range(8)]
    mods = pd.DataFrame({"modality": "language", "model": names, "metric": "cka_36",
                         "convergence": rng.random(8), "n_partners": 2})
    scores = pd.DataFrame({"model": names, "Average ⬆️": rng.random(8) * 50, "cka_36": rng.random(8),
                           "#Params (B)": np.exp(rng.standard_normal(8))})
    out = conv.convergence_correlations(mods, {"language": scores}, {"language": "Average ⬆️"}, "cka_36",
                                        {m: f"fam{i % 4}" for i, m in enumerate(names)}, n_resamples=500)
    bench = out[out["against"] == "Average ⬆️"].iloc[0]
    brain = out[out["against"] == "brain_score"].iloc[0]
    x = mods["convergence"].to_numpy()
    assert bench["pearson_r"] == pytest.approx(np.corrcoef(x, scores["Average ⬆️"])[0, 1], abs=1e-12)
    assert brain["pearson_r"] == pytest.approx(np.corrcoef(x, scores["cka_36"])[0, 1], abs=1e-12)
    assert brain["spearman_rho"] == pytest.approx(sps.spearmanr(x, scores["cka_36"]).statistic, abs=1e-12)
    assert bench["n_models"] == 8 and bench["n_families"] == 4 and bench["metric"] == "cka_36"
    # partial r given log params: both residualised on log(params) with an intercept
    logp = np.log(scores["#Params (B)"].to_numpy())
    design = np.column_stack([np.ones(8), logp])

    def resid(v):
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    want = np.corrcoef(resid(x), resid(scores["Average ⬆️"].to_numpy()))[0, 1]
    assert bench["partial_r_log_params"] == pytest.approx(want, abs=1e-12)
    assert math.isfinite(bench["cluster_bootstrap_ci_low"]) or bench["n_families"] < 5


def test_features_job_extracts_a_stimulus_set_once_and_copies_it_reordered(tmp_path, monkeypatch, caplog):
    import brainalign.models.features as feats
    from brainalign import pipeline

    calls = []

    class Fake:
        def extract(self, stimuli, images, batch_size):
            calls.append(len(stimuli))
            ids = stimuli["nsd_id"].to_numpy(np.float32)[:, None]
            return ["a", "b"], [ids * [1, 2], ids * [3, 4, 5] + 0.5], {"pool": "x"}

    monkeypatch.setattr(feats, "load_model", lambda entry, device: Fake())
    csvs, outs = [], []
    for name, ids in (("subj01", [4, 9, 2]), ("subj02", [9, 2, 4]), ("subj05", [2, 3, 4])):
        csvs.append(tmp_path / f"{name}.csv")
        pd.DataFrame({"nsd_id": ids, "caption": "c"}).to_csv(csvs[-1], index=False)
        outs.append(tmp_path / f"{name}.h5")
    with caplog.at_level(logging.INFO, logger="brainalign"):
        pipeline.extract(REPO / "config/models.yaml", "tf_efficientnet_lite0", csvs, tmp_path / "x.hdf5", "cpu", outs)
    assert calls == [3, 3]  # subj02 saw subj01's images: copied, not extracted
    assert "the same as" in caplog.text
    for out, ids in zip(outs, ([4, 9, 2], [9, 2, 4], [2, 3, 4]), strict=True):
        names, layers, meta = read_features(out, expected_ids=np.array(ids))
        assert names == ["a", "b"] and meta == {"pool": "x"}
        assert np.array_equal(layers[1], (np.array(ids, np.float32)[:, None] * [3, 4, 5] + 0.5).astype(np.float16))
