"""Permutation nulls per measurement (brainalign.alignment.nulls) against slow, obvious references."""

import numpy as np
import pytest

from brainalign.alignment.nulls import bh_fdr, null_scores, null_tables, permutations, summarise


def slow_bh(p):
    """q_i = min over j with p_j >= p_i of p_j m / rank_j (the definition), NaN not counted."""
    p = np.asarray(p, float)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    q = np.full(p.shape, np.nan)
    ranks = {i: 1 + sum(p[j] < p[i] or (p[j] == p[i] and j < i) for j in ok) for i in ok}
    for i in ok:
        q[i] = min(1.0, min(p[j] * m / ranks[j] for j in ok if p[j] >= p[i]))
    return q


def test_bh_fdr_matches_the_definition_with_ties_and_nan():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, 10), [0.02, 0.02, 0.02, np.nan]])
    np.testing.assert_allclose(bh_fdr(p), slow_bh(p), rtol=1e-12)
    assert np.isnan(bh_fdr(p)[-1])
    assert np.isnan(bh_fdr(np.array([np.nan]))).all()


def test_permutations_are_seeded_per_subject_and_are_shuffles():
    a, b = permutations(50, 4, 0, "subj01"), permutations(50, 4, 0, "subj01")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, permutations(50, 4, 0, "subj02"))
    assert not np.array_equal(a, permutations(50, 4, 1, "subj01"))
    assert all(sorted(row) == list(range(50)) for row in a)
    assert permutations(50, 0, 0, "subj01").shape == (0, 50)


def test_unrelated_scores_give_uniform_p_and_a_planted_target_gives_the_smallest():
    rng = np.random.default_rng(0)
    n, P = 80, 39
    sources = [rng.normal(size=(n, 6)) for _ in range(4)]
    targets = [rng.normal(size=(n, 5)) for _ in range(30)]
    planted = sources[1] @ rng.normal(size=(6, 5)) + 0.3 * rng.normal(size=(n, 5))
    perms = permutations(n, P, 0, "subj01")
    observed, null = null_scores(sources, targets + [planted], "cka_36", perms)
    assert observed.shape == (4, 31) and null.shape == (P, 4, 31)
    # the observed scores are the engine's own (no shuffle)
    from brainalign.alignment.metrics import score_matrices

    np.testing.assert_allclose(observed, score_matrices(sources, targets + [planted], ["cka_36"])["cka_36"])
    # a permuted pass equals the engine on the shuffled targets
    shuffled = [t[perms[2]] for t in targets + [planted]]
    np.testing.assert_allclose(null[2], score_matrices(sources, shuffled, ["cka_36"])["cka_36"], rtol=1e-9)
    s = summarise(observed, null)
    unrelated = s["p_perm"][:, :30].ravel()
    # 120 tests of unrelated data: exact p-values are uniform on {1/40, ..., 1}
    assert 0.4 < unrelated.mean() < 0.6
    assert (unrelated <= 0.05).mean() < 0.12
    assert np.histogram(unrelated, bins=4, range=(0, 1))[0].min() >= 15
    assert s["p_perm"][1, 30] == pytest.approx(1 / (P + 1))
    assert s["p_normal"][1, 30] < 1e-6
    np.testing.assert_array_equal(s["n_exceed"], (null >= observed).sum(axis=0))
    # permutations scored in chunks (here one and seven per engine pass) give the same nulls (one a pass: the
    # first 6 permutations, each its own engine pass)
    for chunk, used in ((1, 6), (7, P)):
        obs_c, null_c = null_scores(sources, targets + [planted], "cka_36", perms[:used],
                                    chunk_bytes=chunk * sum(t.nbytes for t in targets + [planted]))
        np.testing.assert_allclose(obs_c, observed, rtol=1e-9)
        np.testing.assert_allclose(null_c, null[:used], rtol=1e-9)


def test_null_tables_fdr_over_all_tests_and_the_fraction_of_significant_layers():
    import pandas as pd

    rows = []
    for layer in range(4):
        for parcel, p in (("V1", 1e-8), ("4", 0.6)):
            rows.append({"src_model": "m", "tgt_model": "subj01", "metric": "cka_36", "src_feature": layer,
                         "tgt_feature": parcel, "score": 0.5, "null_mean": 0.1, "null_sd": 0.1, "n_null": 20,
                         "n_exceed": 0, "p_perm": 1 / 21, "p_normal": p if layer < 3 else 0.9})
    out, parcels = null_tables(pd.DataFrame(rows))
    np.testing.assert_allclose(out["q_normal"], slow_bh(out["p_normal"].to_numpy()))
    frac = parcels.set_index("tgt_feature")["fraction_significant"]
    assert frac["V1"] == 0.75 and frac["4"] == 0.0
    assert set(parcels["n_layers"]) == {4}
