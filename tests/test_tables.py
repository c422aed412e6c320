"""Out-of-core table readers (brainalign.analysis.tables) against the pandas analysis (brainalign.analysis.reference),
the table check's failures, the synthetic generator's planted scores, and the streaming aggregate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brainalign.alignment.metrics import resolve_metrics
from brainalign.analysis import reference as analysis
from brainalign.analysis import tables
from brainalign.bench.synthetic import write_table
from brainalign.io import InputError

REPO = Path(__file__).resolve().parents[1]

METRICS = ["cka_28", "cka_36", "cka_68", "cknna", "mutual_knn_20", "cycle_knn_40"]
MODELS = ["convnext_atto.d2_in1k", "convnext_atto_ols.a2_in1k", "resnet50.a1_in1k",
          "vit_tiny_patch16_224.augreg_in21k_ft_in1k",
          "not_a_paper_model"]


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    """A small table with the awkward cases: NaN scores, tied scores, a model without one layer."""
    d = tmp_path_factory.mktemp("tables")
    clean = d / "clean.parquet"
    write_table(clean, "vision", MODELS, METRICS, n_subjects=3, n_rois=9, seed=5)
    df = pd.read_parquet(clean)
    rng = np.random.default_rng(0)
    df.loc[rng.choice(len(df), 40, replace=False), "score"] = np.nan
    df.loc[rng.choice(len(df), 300, replace=False), "score"] = 0.03125  # ties across metrics
    gone = (df.src_model == MODELS[1]) & (df.src_feature == 2) & (df.tgt_model == "subj02")
    df = df[~gone].astype({c: str for c in tables.STRING_COLUMNS})
    path = d / "vision_all.parquet"
    df.to_parquet(path, index=False)  # plain (not dictionary-encoded) strings, as pandas writes them
    return path


@pytest.fixture(scope="module")
def frame(table_path):
    return pd.read_parquet(table_path)


@pytest.fixture(scope="module")
def info(table_path):
    return tables.check_table(table_path)


def test_check_reports_dimensions_nan_and_missing(info, frame):
    assert info.rows == len(frame)
    assert info.models == frame.groupby("src_model")["src_feature"].max().add(1).to_dict()
    assert info.subjects == ["subj01", "subj02", "subj05"]
    assert info.metrics == METRICS  # the engine's order
    assert len(info.rois) == 9
    assert info.nan_scores == frame["score"].isna().sum() > 30
    assert info.missing_measurements == 9 * len(METRICS)  # one (model, subject, layer): 9 ROIs x 6 metrics
    assert len(info.warnings) == 2
    assert "imagenet" in info.benchmark_columns and "arch" in info.benchmark_columns


@pytest.mark.parametrize("pooling", sorted(analysis.POOLINGS))
def test_brain_scores_equal_the_pandas_analysis(table_path, frame, pooling):
    layers = tables.layer_scores(table_path)
    for metric in ("cka_36", "mutual_knn_20"):
        want = analysis.brain_scores(frame, metric, pooling).set_index("src_model")
        got = tables.brain_scores(layers, metric, pooling).set_index("src_model").loc[want.index]
        np.testing.assert_allclose(got["brain_score"], want["brain_score"], rtol=1e-12)
        assert got["n_subjects"].tolist() == want["n_subjects"].tolist()


def test_consistency_depth_rois_profiles_equal_the_pandas_analysis(table_path, frame):
    layers = tables.layer_scores(table_path, ["cka_36"])
    got = analysis.consistency_matrix(tables.subject_scores(layers, "cka_36", "max_roi_mean_layer"))
    pd.testing.assert_frame_equal(got, analysis.subject_consistency(frame, "cka_36"), rtol=1e-12)

    got = tables.depth_profiles(table_path, "cka_36")
    want = analysis.layer_profiles(frame, "cka_36")
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-12)
    assert got["n"].tolist() == want["n"].tolist()
    assert got[["tgt_model", "yeo7", "relative_src_feature"]].values.tolist() == \
        want[["tgt_model", "yeo7", "relative_src_feature"]].values.tolist()

    # ceiling-normalised: every score over its (subject, ROI) ceiling; ROIs without one left out
    pairs = frame[["tgt_model", "tgt_feature"]].drop_duplicates().reset_index(drop=True)
    pairs["ceiling"] = np.linspace(0.5, 0.9, len(pairs))
    pairs.loc[::4, "ceiling"] = np.nan
    got = tables.depth_profiles(table_path, "cka_36", ceilings=pairs)
    scaled = frame.merge(pairs, on=["tgt_model", "tgt_feature"]).dropna(subset=["ceiling"])
    scaled = scaled.assign(score=scaled["score"] / scaled["ceiling"])
    want = analysis.layer_profiles(scaled, "cka_36")
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-12)
    assert got["n"].tolist() == want["n"].tolist()

    got = tables.roi_scores(table_path, ["cka_28", "cka_68"])
    want = analysis.roi_scores(frame, ["cka_28", "cka_68"])
    keys = ["metric", "tgt_feature", "tgt_model"]
    want = want.sort_values(keys).reset_index(drop=True)
    assert got[keys + ["yeo7"]].values.tolist() == want[keys + ["yeo7"]].values.tolist()
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-12)
    np.testing.assert_allclose(got["normalized_score"], want["normalized_score"], rtol=1e-10)
    ch_got, ch_want = analysis.kernel_size_change(got), analysis.kernel_size_change(want)
    pd.testing.assert_frame_equal(ch_got, ch_want, rtol=1e-10)

    got = tables.profile_matrix([table_path], "cka_36")
    want = analysis.profile_matrix(frame, "cka_36").sort_index()
    pd.testing.assert_frame_equal(got, want[got.columns], rtol=1e-12, check_names=False)


def test_metric_correlation_equals_the_pandas_analysis(table_path, frame, info):
    got = tables.metric_correlation(table_path, info, block=37)  # many blocks, a ragged last one
    want = analysis.metric_correlation(frame)
    assert list(got.index) == list(want.index) == METRICS
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=1e-9)  # exact ranks


def test_trajectory_equals_the_pandas_analysis(table_path, frame):
    ck = pd.DataFrame({"src_model": MODELS[:3], "run": "r", "step": [3, 1, 2], "tokens": np.nan,
                       "performance": np.nan})
    got = tables.trajectory(table_path, ck, "cka_36")
    want = analysis.trajectory(frame, ck, "cka_36")
    pd.testing.assert_frame_equal(got, want, rtol=1e-12)


def test_planted_scores_are_what_the_pandas_analysis_recovers(tmp_path):
    path = tmp_path / "language_all.parquet"
    names = ["allenai/Llama-3.1-Tulu-3-70B", "princeton-nlp/gemma-2-9b-it-SimPO", "x/unknown"]
    planted = write_table(path, "language", names, ["cka_36", "cycle_knn_40"], n_subjects=4, n_rois=30, seed=1)
    df = pd.read_parquet(path)
    assert len(df) == 4 * planted["n_layers"].sum() * 30 * 2
    got = analysis.brain_scores(df, "cka_36").set_index("src_model")["brain_score"]
    want = planted.set_index("model")["cka_36"]
    np.testing.assert_allclose(got[want.index], want, rtol=1e-12)
    from brainalign.analysis.stats import load_paper_scores

    paper = load_paper_scores("language").set_index("model")["cka_36"]
    assert want[names[0]] == paper[names[0]]  # the paper's own score is the planted one
    assert pq.ParquetFile(path).schema_arrow.field("src_model").type == pa.dictionary(pa.int32(), pa.string())


def _bad(tmp_path, df: pd.DataFrame, name="vision_all.parquet"):
    path = tmp_path / name
    df.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("change, named", [
    (lambda d: d.drop(columns="yeo7"), "column 'yeo7' is missing"),
    (lambda d: d.assign(score=d["score"].astype(str)), "column 'score' has type"),
    (lambda d: d.assign(src_feature=d["src_feature"].astype(float)), "column 'src_feature' has type"),
    (lambda d: d.iloc[:0], "no rows"),
    (lambda d: pd.concat([d, d.iloc[[5]]]), "repeat a (model, subject, layer, ROI, metric) key"),
    (lambda d: d.assign(src_feature=d["src_feature"] - 1), "is negative"),
])
def test_a_bad_table_fails_with_one_line_naming_file_and_column(tmp_path, frame, change, named):
    path = _bad(tmp_path, change(frame.copy()))
    with pytest.raises(InputError) as exc:
        tables.check_table(path)
    msg = str(exc.value)
    assert named in msg and str(path) in msg and "\n" not in msg


def test_not_parquet_and_missing_file_fail_naming_the_file(tmp_path):
    junk = tmp_path / "vision_all.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable parquet file"):
        tables.check_schema(junk)
    with pytest.raises(InputError, match="table not found"):
        tables.check_schema(tmp_path / "language_all.parquet")


def test_duplicate_message_names_the_key(tmp_path, frame):
    df = pd.concat([frame, frame.iloc[[11]]])
    with pytest.raises(InputError) as exc:
        tables.check_table(_bad(tmp_path, df))
    row = frame.iloc[11]
    assert f"src_model={row.src_model!r}" in str(exc.value) and f"tgt_feature={row.tgt_feature!r}" in str(exc.value)


def test_check_report_round_trips(tmp_path, info):
    info.to_json(tmp_path / "c.json")
    assert tables.TableInfo.from_json(tmp_path / "c.json") == info
    assert json.loads((tmp_path / "c.json").read_text())["rows"] == info.rows


def test_checkpoints_from_columns_or_registry(tmp_path):
    from brainalign.bench.synthetic import write_tables

    write_tables(tmp_path, 0, 0, ["cka_36"], n_subjects=2, n_rois=6, trained=True)
    vis = tables.checkpoint_info(tmp_path / "vision_trained.parquet")
    assert vis.sort_values("step")["step"].tolist() == [1, 2, 4, 8, 16, 32, 64, 128]
    assert set(vis["run"]) == {"mixnet_s.run0"}
    lang = tables.checkpoint_info(tmp_path / "language_trained.parquet",
                                  [REPO / "config/registry/pythia_checkpoints.yaml"])
    assert lang.sort_values("step")["step"].tolist() == [0, 1, 8, 64, 512, 4000, 32000, 128000]
    assert (lang["tokens"] == lang["step"] * 2_097_152).all()
    with pytest.raises(InputError, match="has no step"):
        tables.checkpoint_info(tmp_path / "language_trained.parquet", [])


AGG = """
import sys
from pathlib import Path
from brainalign.pipeline import aggregate
files = sorted(Path(sys.argv[1]).glob("*.parquet"))
aggregate(files, Path(sys.argv[3]), Path(sys.argv[2]))
# VmHWM: this process's own peak (ru_maxrss would include the pytest parent's RSS at fork)
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])
"""


def test_aggregate_streams_many_job_files_in_bounded_memory(tmp_path):
    """120 per-job files of 77,760 rows each (a paper-size job: 16 layers x 180 ROIs x 27 metrics):
    9.3 M rows, ~1.6 GB as one pandas frame (before the concatenation's copy); the streaming aggregate's peak
    stays near its imports."""
    from brainalign.resources import hcp_parcels

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    rois = list(hcp_parcels()["name"])
    metrics = [s.name for s in resolve_metrics("all")]
    rng = np.random.default_rng(0)
    models = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
    n = 16 * 180 * 27
    idx = np.indices((27, 16, 180)).reshape(3, -1)
    for j in range(120):
        pd.DataFrame({"src_model": models[j % 3], "tgt_model": f"subj{j // 3:02d}",
                      "metric": np.array(metrics)[idx[0]], "src_feature": idx[1], "tgt_feature": np.array(rois)[idx[2]],
                      "score": rng.random(n), "n_layers": 16}).to_parquet(jobs / f"{j:03d}.parquet", index=False)
    out = tmp_path / "vision_all.parquet"
    proc = subprocess.run([sys.executable, "-c", AGG, str(jobs), str(out), str(REPO / "config/models.yaml")],
                          capture_output=True, text=True,
                          check=True)
    peak_gb = int(proc.stdout.split()[-1]) / 1e6
    rows = 120 * n
    per_job = pd.read_parquet(jobs / "000.parquet").memory_usage(deep=True).sum() + n * 8 * 10  # + benchmarks
    in_memory_gb = per_job * 120 / 1e9
    print(f"aggregate of {rows:,} rows: peak RSS {peak_gb:.2f} GB; as one pandas frame {in_memory_gb:.2f} GB")
    assert in_memory_gb > 1.5
    assert peak_gb < 0.4 * in_memory_gb, (peak_gb, in_memory_gb)  # measured 0.20-0.36 GB
    meta = pq.ParquetFile(out)
    assert meta.metadata.num_rows == rows and meta.metadata.num_row_groups == 120
    assert meta.schema_arrow.field("tgt_feature").type == pa.dictionary(pa.int32(), pa.string())
    first = pq.read_table(out, columns=["src_model", "score", "imagenet"]).slice(0, n).to_pandas()
    np.testing.assert_array_equal(first["score"], pd.read_parquet(jobs / "000.parquet")["score"])
    assert (first["src_model"] == models[0]).all() and first["imagenet"].iloc[0] == pytest.approx(0.74832)
    info = tables.check_table(out)
    assert info.rows == rows and info.missing_measurements == 0


def _job_file(path, model="tf_efficientnet_lite0", subject="subj01", layers=3, rois=("V1", "V2"),
              metrics=("cka_36", "cknna")):
    idx = np.indices((len(metrics), layers, len(rois))).reshape(3, -1)
    df = pd.DataFrame({"src_model": model, "tgt_model": subject, "metric": np.array(metrics)[idx[0]],
                       "src_feature": idx[1], "tgt_feature": np.array(rois)[idx[2]],
                       "score": np.linspace(0, 1, idx.shape[1]), "n_layers": layers})
    df.to_parquet(path, index=False)
    return df


@pytest.mark.parametrize(("spoil", "named"), [
    (lambda df: df.iloc[1:], "11 rows, expected 3 layers x 2 ROIs x 2 metrics = 12"),
    (lambda df: pd.concat([df.iloc[:-1], df.iloc[[0]]]), "with no key twice"),
    (lambda df: df.assign(tgt_model=["subj01", "subj02"] * 6), "2 values in 'tgt_model'"),
    (lambda df: df.assign(tgt_feature=df["tgt_feature"].replace("V2", "V3")), "ROIs or metrics differ"),
])
def test_aggregate_names_the_first_job_file_that_breaks_the_row_invariant(tmp_path, spoil, named):
    from brainalign.pipeline import aggregate

    good = tmp_path / "a.parquet"
    _job_file(good)
    bad = tmp_path / "b.parquet"
    df = _job_file(bad, subject="subj02")
    spoil(df).to_parquet(bad, index=False)
    out = tmp_path / "vision_all.parquet"
    with pytest.raises(InputError) as exc:
        aggregate([good, bad], REPO / "config/models.yaml", out)
    assert str(bad) in str(exc.value) and named in str(exc.value)
    assert not out.exists() and not list(tmp_path.glob(".vision_all*"))  # no partial output
    aggregate([good], REPO / "config/models.yaml", out)
    assert pq.ParquetFile(out).metadata.num_rows == 12
