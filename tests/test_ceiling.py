"""Split-half ceilings (brainalign.alignment.ceiling) against the metric of a planted noise-free signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.alignment.ceiling import (
    ceiling_from_split_half,
    effective_trials,
    halves,
    single_trial_reliability,
    spearman_brown,
    split_half_table,
)
from brainalign.alignment.metrics import score_matrices
from brainalign.data.nsd import BrainResponses, write_brain
from brainalign.io import InputError


def test_spearman_brown_and_its_inverse():
    assert spearman_brown(0.5, 2) == pytest.approx(2 / 3)
    assert spearman_brown(0.3, 1) == pytest.approx(0.3)
    for r in (0.05, 0.3, 0.8):
        for m_a, m_b in ((1, 1), (2, 1), (1.6, 1.2)):
            s = np.sqrt(spearman_brown(r, m_a) * spearman_brown(r, m_b))
            assert single_trial_reliability(s, m_a, m_b) == pytest.approx(r, abs=1e-9)
    # two single-trial halves stepped up to two trials: the textbook 2 s / (1 + s), then the root
    rel, ceil = ceiling_from_split_half(0.4, 1, 1, 2)
    assert rel == pytest.approx(0.8 / 1.4) and ceil == pytest.approx(np.sqrt(0.8 / 1.4))
    assert ceiling_from_split_half(-0.1, 1, 1, 2) == (0.0, 0.0)
    assert effective_trials([3, 3, 1]) == pytest.approx(1 / np.mean([1 / 3, 1 / 3, 1]))


def planted(n, v, noise, repeats, seed, signal=1.0):
    """A noise-free signal T (n x v) and trials T + noise, ``repeats[i]`` of image i: the full
    means, the odd-numbered trials' means and the counts, as ingest stores them."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8))
    t = np.tanh(z @ rng.standard_normal((8, v)) / np.sqrt(8))
    t = signal * (t - t.mean(0)) / t.std(0)
    trials = [[t[i] + noise * rng.standard_normal(v) for _ in range(repeats[i])] for i in range(n)]
    mean = np.array([np.mean(x, 0) for x in trials])
    half_a = np.array([np.mean(x[0::2], 0) for x in trials])
    counts_a = np.array([len(x[0::2]) for x in trials])
    return t, mean.astype(np.float32), half_a.astype(np.float32), np.asarray(repeats), counts_a


@pytest.mark.parametrize("noise", [0.7, 1.5, 2.5])
@pytest.mark.parametrize("mix", ["three", "mixed"])
def test_ceiling_is_the_metric_of_the_noise_free_signal(noise, mix):
    """The ceiling estimated from the halves alone matches cka_36 between the planted signal and the
    measured means (a perfect model's score) within 0.05, where the reliability itself (no square
    root) would be off by up to ~0.2."""
    n, metric = 500, "cka_36"
    repeats = [3] * n if mix == "three" else list(np.random.default_rng(1).choice([1, 2, 3], n, p=[0.2, 0.3, 0.5]))
    t, mean, half_a, k, ka = planted(n, 60, noise, repeats, seed=int(noise * 10))
    keep, a, b = halves(mean, half_a, k, ka)
    s = score_matrices([a], [b], [metric])[metric][0, 0]
    rel, ceil = ceiling_from_split_half(s, effective_trials(ka[keep]), effective_trials(k[keep] - ka[keep]),
                                        effective_trials(k))
    truth = score_matrices([t], [mean], [metric])[metric][0, 0]
    assert 0.2 < truth < 0.999
    assert ceil == pytest.approx(truth, abs=0.05)
    if noise >= 1.5:
        assert abs(rel - truth) > 0.1  # why the square root


def test_split_half_table_reads_an_ingested_file(tmp_path):
    n = 300
    t1, m1, a1, k, ka = planted(n, 40, 1.0, [3] * 200 + [2] * 60 + [1] * 40, seed=5)
    _, noise_only, half_noise, _, _ = planted(n, 30, 1.0, list(k), seed=6, signal=0.0)
    got = BrainResponses(np.arange(1, n + 1), {"V1": m1, "ctrl": noise_only}, k, {"V1": a1, "ctrl": half_noise}, ka)
    path = tmp_path / "subj01.h5"
    write_brain(path, "subj01", "paper", got.stim_ids, got.rois, got)
    table = split_half_table(path, "cka_36").set_index("roi")
    assert table.loc["V1", "n_images"] == 260
    assert table.loc["V1", "m"] == pytest.approx(effective_trials(k))
    assert table.loc["V1", "ceiling"] == pytest.approx(score_matrices([t1], [m1], ["cka_36"])["cka_36"][0, 0],
                                                       abs=0.05)
    assert table.loc["ctrl", "ceiling"] < table.loc["V1", "ceiling"] - 0.3
    # chance level: the signal parcel beats every shuffle, the noise-only parcel does not
    assert table.loc["V1", "p_split_half"] == pytest.approx(1 / 11)
    assert table.loc["ctrl", "p_split_half"] > 0.1
    assert table.loc["ctrl", "split_half"] == pytest.approx(table.loc["ctrl", "split_half_null"], abs=0.03)
    plain = tmp_path / "plain.h5"
    write_brain(plain, "subj01", "paper", got.stim_ids, got.rois)
    with pytest.raises(InputError, match="ingested without halves"):
        split_half_table(plain, "cka_36")


def test_the_rule_entry_resolves_device_auto(tmp_path):
    """The SLURM profiles run GPU rules with device auto: the ceiling job resolves it (CPU here)."""
    from brainalign.pipeline import split_half_ceilings

    t, mean, half_a, k, ka = planted(120, 20, 1.0, [3] * 120, seed=2)
    got = BrainResponses(np.arange(1, 121), {"V1": mean}, k, {"V1": half_a}, ka)
    write_brain(tmp_path / "b.h5", "subj02", "paper", got.stim_ids, got.rois, got)
    split_half_ceilings(tmp_path / "b.h5", "cka_36", tmp_path / "out.csv", "auto", permutations=2)
    table = pd.read_csv(tmp_path / "out.csv")
    assert table["subject"].tolist() == ["subj02"] and table["ceiling"].between(0.5, 1).all()
