"""Align batches (brainalign.alignment.batches): how models are grouped into align jobs and how the grouping
survives a growing selection; and the batch job's scores against each model's own job."""

import json

import numpy as np
import pandas as pd
import pytest

from brainalign.alignment.batches import batch_id, plan_batches, read_record, write_record
from brainalign.io import InputError


def test_a_fresh_plan_chunks_each_modality_in_selection_order():
    models = {"vision": list("abcdefg"), "language": ["x", "y"]}
    got = plan_batches(models, 3)
    assert got == {"vision": [("a", "b", "c"), ("d", "e", "f"), ("g",)], "language": [("x", "y")]}
    assert [batch_id(b) for b in got["vision"]] == ["a+2", "d+2", "g"]
    assert plan_batches(models, 1)["vision"] == [(m,) for m in "abcdefg"]
    with pytest.raises(InputError, match="align_batch"):
        plan_batches(models, 0)


def test_started_batches_keep_their_models_and_new_ones_form_their_own():
    """A model inserted anywhere in the selection joins no started batch (none of their inputs change);
    a planned batch that never started is dissolved and regrouped with it."""
    recorded = {"vision": [["a", "b", "c"], ["d", "e", "f"], ["g"]]}
    started = {"a+2", "d+2"}.__contains__
    models = {"vision": ["a", "new1", "b", "c", "d", "e", "f", "g", "new2"]}
    got = plan_batches(models, 3, recorded, started)["vision"]
    assert got == [("a", "b", "c"), ("new1", "g", "new2"), ("d", "e", "f")]  # in order of their first model
    # every batch started: the additions form a batch of their own
    got = plan_batches(models, 3, recorded, lambda b: True)["vision"]
    assert got == [("a", "b", "c"), ("new1", "new2"), ("d", "e", "f"), ("g",)]


def test_a_deselected_model_leaves_its_batch_and_a_model_is_in_one_batch_only():
    recorded = {"vision": [["a", "b", "c"], ["c", "d"]], "language": [["x"]]}
    got = plan_batches({"vision": ["a", "c", "d"], "language": []}, 8, recorded)
    assert got == {"vision": [("a", "c"), ("d",)], "language": []}
    # a recorded model of another modality is not taken from that modality's record
    got = plan_batches({"vision": ["x"], "language": []}, 8, recorded)
    assert got == {"vision": [("x",)], "language": []}


def test_the_plan_is_stable_when_jobs_finish_in_any_order():
    """A job's own process plans again from the record: removing started full chunks from the pending
    models leaves the other chunks as they were, whatever order the jobs start in."""
    models = {"vision": [f"m{i}" for i in range(23)]}
    first = plan_batches(models, 8)
    record = {mod: [list(b) for b in groups] for mod, groups in first.items()}
    for started in ({"m0+7"}, {"m8+7"}, {"m16+6"}, {"m0+7", "m16+6"}, set()):
        assert plan_batches(models, 8, record, started.__contains__) == first


def test_the_record_round_trips_and_a_broken_one_names_the_fix(tmp_path):
    path = tmp_path / "alignment" / "batches.json"
    assert read_record(path) == {}
    batches = {"vision": [("a", "b")], "language": [("x",)]}
    assert write_record(path, batches) is True
    assert read_record(path) == {"vision": [["a", "b"]], "language": [["x"]]}
    mtime = path.stat().st_mtime_ns
    assert write_record(path, batches) is False and path.stat().st_mtime_ns == mtime
    path.write_text(json.dumps({"format": 99, "batches": {}}))
    assert read_record(path) == {}  # another format: planned afresh
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"batches.json: not a batch record .*delete it"):
        read_record(path)
    path.write_text(json.dumps({"format": 1, "batches": {"vision": [[]]}}))
    with pytest.raises(InputError, match="delete it"):
        read_record(path)


def _release(tmp_path):
    """A subject's brain file (2 ROIs) and three models' feature files (2, 3, 4 layers) on 40 stimuli."""
    from brainalign.data.nsd import write_brain
    from brainalign.models.features import write_features

    rng = np.random.default_rng(0)
    n, ids = 40, np.arange(40) + 1000
    brain = tmp_path / "brain.h5"
    write_brain(brain, "subj01", "paper", ids, {r: rng.standard_normal((n, 7)) for r in ("V1", "V2")})
    feats, models = [], ["m_a", "m_b", "m_c"]
    for i, m in enumerate(models):
        feats.append(tmp_path / f"{m}.h5")
        layers = [rng.standard_normal((n, 5 + j)).astype(np.float32) for j in range(2 + i)]
        write_features(feats[-1], m, ids, [f"l{j}" for j in range(len(layers))], layers, {})
    return brain, feats, models


def test_a_batch_job_writes_each_models_own_scores(tmp_path):
    """align_batch_job on three models equals three align_job runs (scores and nulls), the models' rows
    one after another."""
    from brainalign.pipeline import align_batch_job, align_job

    brain, feats, models = _release(tmp_path)
    kw = dict(metrics=["cka_36", "mutual_knn_20", "linear_cka"], device="cpu", null_metric="cka_36",
              permutations=3, seed=1)
    align_batch_job(brain, feats, models, "subj01", out=tmp_path / "batch.parquet",
                    nulls_out=tmp_path / "batch_nulls.parquet", **kw)
    batch = pd.read_parquet(tmp_path / "batch.parquet")
    batch_nulls = pd.read_parquet(tmp_path / "batch_nulls.parquet")
    assert list(batch["src_model"].unique()) == models
    for m, f in zip(models, feats, strict=True):
        align_job(brain, f, m, "subj01", out=tmp_path / f"{m}.parquet", nulls_out=tmp_path / f"{m}_nulls.parquet",
                  **kw)
        own = pd.read_parquet(tmp_path / f"{m}.parquet")
        pd.testing.assert_frame_equal(batch[batch["src_model"] == m].reset_index(drop=True), own, rtol=1e-6)
        own_nulls = pd.read_parquet(tmp_path / f"{m}_nulls.parquet")
        pd.testing.assert_frame_equal(batch_nulls[batch_nulls["src_model"] == m].reset_index(drop=True), own_nulls,
                                      rtol=1e-6)
    with pytest.raises(ValueError, match="one file per model"):
        align_batch_job(brain, feats[:2], models, "subj01", out=tmp_path / "x.parquet", **kw)


def test_a_batch_beyond_half_the_budget_streams_in_groups_and_names_the_key(tmp_path, monkeypatch, caplog):
    """align_max_gb is the engine's budget: below twice the batch's z-scores the layers are streamed in groups
    (the ROIs' side once per group), the scores stay the one-group job's, and the log names the key and the
    budget that makes the batch one group."""
    import logging

    from brainalign.alignment import engine
    from brainalign.pipeline import align_batch_job

    brain, feats, models = _release(tmp_path)
    monkeypatch.setattr(engine, "MIN_GROUP_BYTES", 1)  # groups of any size (256 MB at least otherwise)
    kw = dict(metrics=["cka_36", "mutual_knn_20", "cycle_knn_10", "cknna_10"], device="cpu")
    groups = []
    run = engine.run

    def spy(sources, targets, specs, device, max_bytes, dtype, stats, **kwargs):
        stats = {}
        out = run(sources, targets, specs, device, max_bytes, dtype, stats, **kwargs)
        groups.append(stats["source_groups"])
        return out

    monkeypatch.setattr(engine, "run", spy)
    align_batch_job(brain, feats, models, "subj01", out=tmp_path / "one.parquet", **kw)
    with caplog.at_level(logging.WARNING, logger="brainalign.pipeline"):
        align_batch_job(brain, feats, models, "subj01", out=tmp_path / "groups.parquet", max_gb=1e-5, **kw)
    need = 16 * 40 * (11 + 18 + 26) / 1e9 + 0.05
    assert groups[0] == 1 and groups[1] > 2, groups
    assert f"'align_max_gb' >= {need:.1f}" in caplog.text and f"in {groups[1]} groups" in caplog.text
    one, grouped = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "groups.parquet")
    pd.testing.assert_frame_equal(grouped.drop(columns="score"), one.drop(columns="score"))
    # the same sums in other float32 blockings (CKA), float64 ones (CKNNA); neighbour counts exactly
    np.testing.assert_allclose(grouped["score"], one["score"], rtol=0, atol=5e-6)
    cknna, knn = one["metric"] == "cknna_10", one["metric"].isin(["mutual_knn_20", "cycle_knn_10"])
    np.testing.assert_allclose(grouped["score"][cknna], one["score"][cknna], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(grouped["score"][knn], one["score"][knn])
