"""The brain summary (brainalign.alignment.summary): the ROIs' side computed once and read by every align job
gives the scores of the job that computes it itself, and never meets other responses or metrics."""

import h5py
import numpy as np
import pytest

from brainalign.alignment.metrics import resolve_metrics, score_matrices
from brainalign.alignment.summary import FORMAT_VERSION, compute_summary, read_summary, write_summary
from brainalign.io import InputError

# every stimulus-plane metric: the paper's 27 (k up to 400), linear CKA and RSA (Pearson)
PLANE = [s.name for s in resolve_metrics("all")] + ["linear_cka", "rsa_pearson"]
COUNTS = [m for m in PLANE if "knn" in m]


def data(n=460, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 12))
    sources = [(latent @ rng.normal(size=(12, d)) + rng.normal(size=(n, d))).astype(np.float32) for d in (30, 45, 20)]
    targets = [(latent @ rng.normal(size=(12, v)) + 2 * rng.normal(size=(n, v))).astype(np.float32)
               for v in (25, 8, 40, 16)]
    # ties: a target whose stimuli come in identical pairs (neighbour ranks decided by the tie rule)
    targets[1][1::2] = targets[1][::2]
    return sources, targets


@pytest.fixture(scope="module")
def job():
    sources, targets = data()
    return sources, targets, {dtype: score_matrices(sources, targets, PLANE, dtype=dtype)
                              for dtype in ("float32", "float64")}


@pytest.mark.parametrize(("dtype", "path"), [("float64", "torch"), ("float64", "kernel"), ("float32", "kernel")])
def test_summary_gives_the_scores_of_the_full_job(job, dtype, path, tmp_path, monkeypatch):
    """float64: the same numbers to the last bits; float32 (ROIs held in float32): within the kernels'
    float32 rounding; neighbour counts exactly, in memory and read back from HDF5 block by block; the
    sources' neighbour sums in the CPU kernels or the torch gathers (the full job's are torch's; the
    float32 job's differ from the float64 one's in the kernel blocks only)."""
    from brainalign.alignment import engine

    sources, targets, want = job
    monkeypatch.setattr(engine, "RANK_KERNEL", path == "kernel")
    summary = compute_summary(targets, PLANE, dtype=dtype)
    write_summary(summary, tmp_path / "s.h5")
    on_disk = read_summary(tmp_path / "s.h5")
    streamed = compute_summary(targets, PLANE, dtype=dtype, path=tmp_path / "streamed.h5")  # written block by block
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "streamed.h5"]
    for brain in (summary, on_disk, streamed):
        got = score_matrices(sources, targets, PLANE, dtype=dtype, brain=brain)
        for name in PLANE:
            if name in COUNTS or name.startswith("cknna") or dtype == "float64":
                np.testing.assert_allclose(got[name], want[dtype][name], rtol=0, atol=1e-12, err_msg=name)
            else:
                np.testing.assert_allclose(got[name], want["float64"][name], rtol=0, atol=5e-5, err_msg=name)
    on_disk.close()
    streamed.close()


@pytest.mark.parametrize("path", ["torch", "kernel"])
def test_float32_job_holds_its_sources_in_float32_and_matches_the_float64_job(job, path, monkeypatch):
    """Without rsa_pearson (whose correlations need the Gram rows), a float32 job reading a summary runs each
    source's pass 1 alone in float64 (its exact lists and its Gram values at CKNNA's first k), then holds its
    z-scores in float32: every representation's squared distances come from one float32 product that adds
    the norms in (_CKA.distances_single), CKNNA reads the sources' stored values in the torch gathers and
    in the compiled kernel alike; the distances are formed for kernel sub-blocks of a few rows (here 16, in
    row blocks of ~100, with the torch gathers). Counts and CKNNA as the float64 job's, kernels within float32
    rounding."""
    from brainalign.alignment import engine

    sources, targets, want = job
    monkeypatch.setattr(engine, "RANK_KERNEL", path == "kernel")
    names = [s.name for s in resolve_metrics("all")] + ["linear_cka"]
    budget, stats = None, {}
    if path == "torch":
        monkeypatch.setattr(engine, "KERNEL_BLOCK_BYTES", 16 * 7 * 460 * 4)  # 16 rows of 7 representations
        fixed, per_row = engine.memory_plan(460, 3, 4, engine.Plan.of(resolve_metrics(names)), 4, summary=True,
                                            compact=True)
        budget = fixed + 100 * per_row
    calls, dtypes = [], []
    single = engine._CKA.distances_single
    monkeypatch.setattr(engine._CKA, "distances_single", lambda self, r, rep, *a: calls.append(r) or
                        dtypes.append(rep.z.dtype) or single(self, r, rep, *a))
    summary = compute_summary(targets, names, dtype="float32")
    got = score_matrices(sources, targets, names, dtype="float32", brain=summary, max_bytes=budget, stats=stats)
    assert sorted(set(calls)) == list(range(len(sources) + len(targets)))  # every layer and ROI, that way
    assert {str(d) for d in dtypes} == {"torch.float32"}
    if path == "torch":  # sub-blocks of 16 rows in several row blocks
        assert 16 < stats["block_rows"] < 460 and len(calls) == 7 * sum(
            -(-(min(460, r0 + stats["block_rows"]) - r0) // 16) for r0 in range(0, 460, stats["block_rows"]))
    for name in names:
        atol = 1e-12 if "knn" in name else 5e-5
        np.testing.assert_allclose(got[name], want["float64"][name], rtol=0, atol=atol, err_msg=name)


def test_summary_serves_any_subset_of_its_metrics_and_source_groups(job):
    """A job asking for fewer metrics, with a budget that streams its sources in groups, reads the same summary."""
    sources, targets, want = job
    summary = compute_summary(targets, PLANE, dtype="float64")
    names = ["cka_36", "mutual_knn_20", "cycle_knn_100", "cknna_10"]
    stats = {}
    got = score_matrices(sources, targets, names, dtype="float64", brain=summary, max_bytes=1 << 20, stats=stats)
    for name in names:
        np.testing.assert_allclose(got[name], want["float64"][name], rtol=0, atol=1e-12, err_msg=name)


def test_summary_refuses_other_responses_and_other_metrics():
    sources, targets = data()
    summary = compute_summary(targets, ["cka_36", "mutual_knn_20"])
    with pytest.raises(ValueError, match="not of these responses"):
        score_matrices(sources, [t[:, ::-1].copy() + 1 for t in targets[:1]] + targets[1:], ["cka_36"], brain=summary)
    with pytest.raises(ValueError, match="ROIs and"):
        score_matrices(sources, targets[:3], ["cka_36"], brain=summary)
    with pytest.raises(ValueError, match="cka_100"):
        score_matrices(sources, targets, ["cka_100"], brain=summary)
    with pytest.raises(ValueError, match="k = 40"):
        score_matrices(sources, targets, ["mutual_knn_40"], brain=summary)


def test_summary_file_format_is_versioned(tmp_path):
    _, targets = data(n=120)
    path = tmp_path / "s.h5"
    write_summary(compute_summary(targets, ["cka_36"]), path)
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # written atomically: no temporary left
    with h5py.File(path, "a") as f:
        f.attrs["summary"] = f.attrs["summary"].replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 0')
    with pytest.raises(InputError, match="s.h5: brain summary format 0.*delete it"):
        read_summary(path)
    (tmp_path / "x.h5").write_bytes(b"")
    with h5py.File(tmp_path / "x.h5", "w"):
        pass
    with pytest.raises(InputError, match="x.h5: not a brain summary"):
        read_summary(tmp_path / "x.h5")


def test_brain_summary_job_writes_the_file_the_align_job_reads(tmp_path):
    """The workflow's two jobs on a brain file: the summary (streamed to HDF5) and an align job reading it
    give the scores of an align job without it."""
    import pandas as pd

    from brainalign.data.nsd import write_brain
    from brainalign.models.features import write_features
    from brainalign.pipeline import align_job, brain_summary_job

    sources, targets = data(n=150)
    ids = np.arange(150) + 1000
    write_brain(tmp_path / "brain.h5", "subj01", "paper", ids, {f"R{i}": t for i, t in enumerate(targets)})
    write_features(tmp_path / "features.h5", "m", ids, [f"l{i}" for i in range(len(sources))], sources, {})
    metrics = ["cka_36", "mutual_knn_20", "cycle_knn_40", "cknna_10"]
    brain_summary_job(tmp_path / "brain.h5", tmp_path / "summary.h5", metrics, "cpu")
    align_job(tmp_path / "brain.h5", tmp_path / "features.h5", "m", "subj01", metrics, "cpu", tmp_path / "a.parquet",
              summary_h5=tmp_path / "summary.h5")
    align_job(tmp_path / "brain.h5", tmp_path / "features.h5", "m", "subj01", metrics, "cpu", tmp_path / "b.parquet")
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert len(a) == len(b) == 3 * 4 * len(metrics)
    np.testing.assert_allclose(a["score"], b["score"], rtol=0, atol=5e-6)


def test_chunked_inverse_gives_the_entries_of_the_whole_one():
    """ChunkedInverse (a compact job's sources' inverted lists, a range of stimuli at a time) gives each row
    block the entries of Inverse.of, in the same order, for chunks smaller and larger than the blocks."""
    import torch

    from brainalign.alignment.engine import ChunkedInverse, Inverse

    rng = np.random.default_rng(3)
    n, k = 300, 40
    lists = torch.as_tensor(np.stack([rng.permutation(np.delete(np.arange(n), i))[:k] for i in range(n)]),
                            dtype=torch.int16)
    whole = Inverse.of(lists)
    for rows, b in ((37, 50), (120, 50), (300, 64)):
        chunked = ChunkedInverse(lists, rows)
        for r0 in range(0, n, b):
            r1 = min(n, r0 + b)
            for got, want in zip(chunked.block(r0, r1), whole.block(r0, r1), strict=True):
                assert torch.equal(got, want), (rows, b, r0)


def test_own_neighbours_from_the_whole_gram_matrix_or_row_blocks_agree():
    """A source's lone neighbour pass (own_neighbours) gives the same lists and Gram values whether it forms
    the whole Gram matrix over the upper triangle (where it fits the budget) or full rows block by block,
    and the lists of the job that computes every side itself."""
    import torch

    from brainalign.alignment import engine

    sources, targets = data()
    plan = engine.Plan.of(resolve_metrics("all"))
    n = sources[0].shape[0]
    out = []
    for budget in (0, 8 * n * n):
        rep = engine.prepare(sources[0], "cpu")
        engine.own_neighbours(rep, plan, n, 64, max_bytes=budget)
        assert rep.z.dtype == torch.float32
        out.append(rep)
    assert torch.equal(out[0].lists, out[1].lists)
    np.testing.assert_allclose(out[0].vals.numpy(), out[1].vals.numpy(), rtol=1e-13, atol=0)
    full = engine.prepare(sources[0], "cpu")
    g = full.z @ full.z.T
    np.testing.assert_allclose(out[1].vals.numpy(), g.gather(1, out[1].lists[:, : plan.k_cknna].long()).numpy(),
                               rtol=1e-13, atol=1e-12)
