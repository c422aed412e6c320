"""Exact RSA-Spearman (brainalign.alignment.rsa) against rsatoolbox 0.3.2 and scipy, on every memory path."""

import os

import numpy as np
import pytest
import rsatoolbox
import torch
from scipy.stats import rankdata, spearmanr

from brainalign.alignment import rsa


@pytest.fixture(params=["numpy", "torch"])
def kernels(request, monkeypatch):
    """Both ranking codes: numpy's (CPU) and torch's (the CUDA path, run here on CPU)."""
    monkeypatch.setattr(rsa, "NUMPY_ON_CPU", request.param == "numpy")
    return request.param


def zscored(z):
    z = np.asarray(z, dtype=np.float64)
    return torch.from_numpy((z - z.mean(0)) / z.std(0))


def random_reps(rng, n, dims):
    return [zscored(rng.standard_normal((n, d))) for d in dims]


def toolbox_rdm(z):
    return rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(z.numpy()), method="correlation")


def toolbox_scores(sources, targets, method):
    a = [toolbox_rdm(z) for z in sources]
    b = [toolbox_rdm(z) for z in targets]
    return np.array([[rsatoolbox.rdm.compare(x, y, method=method)[0, 0] for y in b] for x in a])


def pm_one_patterns(rng, n, d=16):
    """Rows of d/2 +1 and d/2 -1: every correlation is a multiple of 2/d, exactly, in numpy and in torch,
    so the RDM has few distinct values and many ties."""
    half = np.r_[np.ones(d // 2), -np.ones(d // 2)]
    return torch.from_numpy(np.stack([rng.permutation(half) for _ in range(n)]))


def budget(n, d, count, sort_fraction, out_in_memory):
    """A max_bytes that keeps the ranks on disk and lets one sort hold ``sort_fraction`` of an RDM."""
    p = rsa.plan(n, d, count, 1 << 40, "cpu")
    m = p["m"]
    extra = 4 * m if out_in_memory else 0
    return p["fixed"] + extra + int(sort_fraction * rsa.SORT_BYTES["cpu"] * m)


@pytest.mark.parametrize(("n", "s", "t"), [(30, 1, 1), (57, 3, 4), (120, 2, 5)])
def test_spearman_and_pearson_match_rsatoolbox(n, s, t):
    rng = np.random.default_rng(n)
    sources = random_reps(rng, n, [int(d) for d in rng.integers(3, 40, size=s)])
    targets = random_reps(rng, n, [int(d) for d in rng.integers(2, 25, size=t)])
    # planted: the first target is a noisy linear map of the first source
    targets[0] = zscored(sources[0].numpy() @ rng.standard_normal((sources[0].shape[1], 7))
                         + 0.2 * rng.standard_normal((n, 7)))
    got = rsa.rsa_spearman_scores(sources, targets)
    want = toolbox_scores(sources, targets, "spearman")
    assert got.shape == (s, t)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert got[0, 0] > 0.3 and got[0, 0] == got.max()  # the planted pair is found
    assert np.abs(got).max() > 0.1 and np.isfinite(got).all()
    pearson = np.array([[rsa.rsa_pearson_reference(x, y) for y in targets] for x in sources])
    np.testing.assert_allclose(pearson, toolbox_scores(sources, targets, "corr"), atol=1e-6, rtol=0)
    assert np.abs(pearson - got).max() > 1e-4  # the two metrics differ: neither is the other in disguise


def test_ties_are_averaged(kernels):
    rng = np.random.default_rng(7)
    n = 60
    sources = [pm_one_patterns(rng, n), zscored(rng.standard_normal((n, 9)))]
    targets = [pm_one_patterns(rng, n), pm_one_patterns(rng, n, d=64), zscored(rng.standard_normal((n, 4)))]
    rdm = rsa.condensed_rdm(sources[0]).numpy()
    assert len(np.unique(rdm)) <= 9 and len(rdm) == n * (n - 1) // 2  # heavy ties
    got = rsa.rsa_spearman_scores(sources, targets)
    np.testing.assert_allclose(got, toolbox_scores(sources, targets, "spearman"), atol=1e-9, rtol=0)
    for i, x in enumerate(sources):
        for j, y in enumerate(targets):
            a, b = rsa.condensed_rdm(x).numpy(), rsa.condensed_rdm(y).numpy()
            assert abs(got[i, j] - spearmanr(a, b)[0]) < 1e-9
    # ties broken arbitrarily (ordinal ranks) give another value on this data
    a, b = rsa.condensed_rdm(sources[0]).numpy(), rsa.condensed_rdm(targets[0]).numpy()
    ordinal = np.corrcoef(rankdata(a, method="ordinal"), rankdata(b, method="ordinal"))[0, 1]
    assert abs(ordinal - got[0, 0]) > 1e-3


def test_rank_average_matches_scipy(kernels):
    rng = np.random.default_rng(3)
    values = rng.integers(0, 5, size=1001).astype(np.float64)
    values[::7] = rng.standard_normal(len(values[::7]))
    got = rsa.rank_average(torch.from_numpy(values)).numpy()
    np.testing.assert_array_equal(got, 2 * rankdata(values) - (len(values) + 1))
    assert got.dtype == np.int64


@pytest.mark.parametrize("out_in_memory", [True, False])
def test_budgeted_paths_are_exact(tmp_path, out_in_memory, kernels):
    rng = np.random.default_rng(11)
    n = 120
    sources = random_reps(rng, n, [12, 5])
    targets = random_reps(rng, n, [8, 3]) + [pm_one_patterns(rng, n)]
    free = {}
    want = rsa.rsa_spearman_scores(sources, targets, stats=free)
    assert not free["on_disk"] and free["ranges"] == 1 and free["workdir"] is None
    full_sort = 1.2 if out_in_memory else 0.4
    tight = {}
    got = rsa.rsa_spearman_scores(sources, targets, stats=tight, workdir=tmp_path,
                                  max_bytes=budget(n, 12, 5, full_sort, out_in_memory))
    np.testing.assert_allclose(got, want, atol=1e-12, rtol=0)
    assert tight["on_disk"]
    if out_in_memory:
        assert tight["ranges"] == 1
    else:
        assert tight["ranges"] >= 3 and tight["passes"] > len(sources) + len(targets)
    assert tight["workdir"].startswith(str(tmp_path)) and not os.path.exists(tight["workdir"])
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_allclose(want, toolbox_scores(sources, targets, "spearman"), atol=1e-9, rtol=0)


def test_rank_files_are_removed_on_error(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    n = 40
    sources, targets = random_reps(rng, n, [4]), random_reps(rng, n, [3, 3])

    def fail(*args, **kwargs):
        raise RuntimeError("products failed")

    monkeypatch.setattr(rsa, "_products", fail)
    with pytest.raises(RuntimeError, match="products failed"):
        rsa.rsa_spearman_scores(sources, targets, workdir=tmp_path, max_bytes=budget(n, 4, 3, 0.5, False))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ties", [False, True])
def test_over_full_ranges_are_split(monkeypatch, ties, kernels):
    """A sample too small for its ranges: the over-full ranges are split by more sampling, exactly."""
    monkeypatch.setattr(rsa, "SAMPLE_PER_RANGE", 1)
    monkeypatch.setattr(rsa, "RANGE_OVERSAMPLE", 1)
    rng = np.random.default_rng(2)
    n = 90
    z = pm_one_patterns(rng, n) if ties else torch.from_numpy(rng.standard_normal((n, 6)))
    m = n * (n - 1) // 2
    out = torch.empty(m, dtype=torch.int32)
    done = rsa.rank_rdm(rsa.unit_rows(z), out, rsa.SORT_BYTES["cpu"] * 200)
    values = rsa.condensed_rdm(z).numpy()
    np.testing.assert_array_equal(out.numpy(), 2 * rankdata(values) - (m + 1))
    assert done["refine"] >= 1
    if not ties:
        assert done["ranges"] >= m // 200


def test_constant_rdm_gives_nan():
    rng = np.random.default_rng(4)
    n = 25
    same = torch.from_numpy(np.tile(rng.standard_normal(6), (n, 1)))  # every stimulus alike: RDM all 0
    sources = [same, zscored(rng.standard_normal((n, 5)))]
    targets = random_reps(rng, n, [4, 6])
    got = rsa.rsa_spearman_scores(sources, targets)
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()


def test_errors():
    rng = np.random.default_rng(6)
    n = 30
    sources, targets = random_reps(rng, n, [5]), random_reps(rng, n, [4, 1, 3])
    with pytest.raises(ValueError, match="target 1 has stimuli with a constant pattern.*>= 2 voxels"):
        rsa.rsa_spearman_scores(sources, targets)
    with pytest.raises(ValueError, match="source 0 has stimuli with a constant pattern"):
        rsa.rsa_spearman_scores([torch.ones(n, 3)], targets[:1])
    with pytest.raises(ValueError, match="target 0 has 29 stimuli"):
        rsa.rsa_spearman_scores(sources, [targets[0][:29]])
    with pytest.raises(ValueError, match="at least one source"):
        rsa.rsa_spearman_scores([], targets)
    with pytest.raises(MemoryError, match="raise max_bytes"):
        rsa.rsa_spearman_scores(sources, targets[:1], max_bytes=1000)


def test_packed_sort_is_exact():
    """The CPU sort packs a truncated key with the index: values closer than the truncation, a wide range of
    magnitudes, -0.0 beside 0.0 and exact ties must all come out in exact order."""
    rng = np.random.default_rng(8)
    spread = rng.uniform(0.0, 2.0, size=20000)
    cluster = 1.0 + rng.integers(-40, 40, size=300) * np.finfo(np.float64).eps  # within the dropped bits
    values = np.concatenate([spread, cluster, [0.0, -0.0, -0.0, 1e-300, -3.5, 7.25, 7.25]])
    rng.shuffle(values)
    array = values.copy()
    order = rsa._sort_packed(array)
    assert order is not None  # the shortcut was taken, not the fallback
    np.testing.assert_array_equal(array, np.sort(values))
    np.testing.assert_array_equal(values[order], np.sort(values))
    np.testing.assert_array_equal(rsa.rank_average(torch.from_numpy(values)).numpy(),
                                  2 * rankdata(values) - (len(values) + 1))
    many = np.repeat(rng.standard_normal(50), 40)  # mostly runs: falls back to argsort
    assert rsa._sort_packed(many.copy()) is None
    np.testing.assert_array_equal(rsa.rank_average(torch.from_numpy(many)).numpy(), 2 * rankdata(many) - 2001)
