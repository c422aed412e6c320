"""NSD ingest on a tiny hand-built release whose every value is known."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from brainalign.data.nsd import NSDLayout, load_roi_responses, read_parcel_table, subject_stimuli
from brainalign.io import InputError

SHAPE = (3, 3, 2)
# 73KIDs of subj01's trials, per session (1-based, as responses.tsv); 1 and 2 are shared
SESSIONS = {1: [1, 3, 4, 1], 2: [5, 3, 2, 4]}
LABELS = np.array([-1, 0, 1, 1, 4, 4, 0, 1, 4, -1, 0, 0, 1, 4, 4, 0, 0, -1]).reshape(SHAPE)


def raw_beta(kid: int, voxel: int, session: int) -> int:
    """The int16 value stored for a trial of image ``kid`` at flat voxel ``voxel``."""
    return kid * 100 + voxel * 3 + session


def make_release(root: Path) -> NSDLayout:
    layout = NSDLayout(root)
    for p in (layout.expdesign, layout.stim_info, layout.stimuli, layout.parcel_table):
        p.parent.mkdir(parents=True, exist_ok=True)
    savemat(layout.expdesign, {
        "masterordering": np.array([[1, 2, 3, 1, 4, 2, 5, 3]]),
        "subjectim": np.tile(np.array([1, 2, 3, 4, 5]), (8, 1)),
        "sharedix": np.array([[1, 2]]),
    })
    info = pd.DataFrame({"cocoId": [11, 12, 13, 14, 15], "cocoSplit": ["train2017", "val2017", "train2017",
                                                                      "train2017", "val2017"],
                         "nsdId": [0, 1, 2, 3, 4]})
    info.to_csv(layout.stim_info)
    for split in ("train2017", "val2017"):
        ids = info.loc[info.cocoSplit == split, "cocoId"].tolist()
        anns = [{"image_id": c, "id": 10 * c + j, "caption": f"caption {j} of {c}"} for c in ids for j in (1, 2)]
        layout.captions(split).parent.mkdir(parents=True, exist_ok=True)
        layout.captions(split).write_text(json.dumps({"images": [], "annotations": anns}))
    layout.parcel_table.write_text("0 Unknown\n1 V1\n2 MST\n4 V2\n")
    layout.parcel_volume("subj01").parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(LABELS.astype(np.int16), np.eye(4)), layout.parcel_volume("subj01"))
    rows = []
    layout.betas_dir("subj01").mkdir(parents=True, exist_ok=True)
    for session, kids in SESSIONS.items():
        data = np.zeros((*SHAPE, len(kids)), dtype=np.int16)
        for t, kid in enumerate(kids):
            data[..., t] = np.array([raw_beta(kid, v, session) for v in range(LABELS.size)]).reshape(SHAPE)
            rows.append({"SUBJECT": 1, "SESSION": session, "RUN": 1, "TRIAL": t + 1, "73KID": kid})
        nib.save(nib.Nifti1Image(data, np.eye(4)), layout.betas("subj01", session))
    layout.responses("subj01").parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(layout.responses("subj01"), sep="\t", index=False)
    return layout


def expected(kids, voxels, sessions=SESSIONS):
    """Mean over the repeats (in the given sessions) of each image, percent signal change."""
    out = np.zeros((len(kids), len(voxels)))
    for i, kid in enumerate(kids):
        vals = [[raw_beta(kid, v, s) for v in voxels] for s, ks in sessions.items() for k in ks if k == kid]
        out[i] = np.mean(vals, axis=0) / 300.0
    return out


@pytest.fixture
def release(tmp_path):
    return make_release(tmp_path / "nsd")


@pytest.mark.parametrize(("split", "kids"), [("paper", [3, 4, 5]), ("shared1000", [1, 2]), ("all", [1, 3, 4, 5, 2])])
def test_split_order_and_repeat_averaging(release, split, kids):
    ids, rois = load_roi_responses(release, "subj01", "all", split)
    assert ids.tolist() == kids  # order of first occurrence
    assert list(rois) == ["V1", "V2"]  # parcels present in the volume, atlas order; MST has no voxels
    flat = LABELS.reshape(-1)
    for name, label in (("V1", 1), ("V2", 4)):
        vox = np.flatnonzero(flat == label)  # both hemispheres share the id
        np.testing.assert_allclose(rois[name], expected(kids, vox), rtol=1e-6)


def test_hdf5_sessions_read_like_nifti(release):
    ids_a, rois_a = load_roi_responses(release, "subj01", ["V2"], "paper")
    nii = release.betas("subj01", 2)
    data = np.asanyarray(nib.load(nii).dataobj)
    with h5py.File(release.betas("subj01", 2, "hdf5"), "w") as f:
        f["betas"] = data.transpose(3, 2, 1, 0)  # NSD's hdf5 layout: (trials, Z, Y, X)
    nii.unlink()
    ids_b, rois_b = load_roi_responses(release, "subj01", ["V2"], "paper")
    assert ids_a.tolist() == ids_b.tolist()
    np.testing.assert_array_equal(rois_a["V2"], rois_b["V2"])


def test_only_sessions_on_disk_are_used(release):
    release.betas("subj01", 2).unlink()
    ids, rois = load_roi_responses(release, "subj01", ["V1"], "paper")
    assert ids.tolist() == [3, 4]
    vox = np.flatnonzero(LABELS.reshape(-1) == 1)
    np.testing.assert_allclose(rois["V1"], expected([3, 4], vox, {1: SESSIONS[1]}), rtol=1e-6)
    assert subject_stimuli(release, "subj01", "paper")["nsd_id"].tolist() == [3, 4]


def test_zscore_sessions(release):
    _, raw = load_roi_responses(release, "subj01", ["V1"], "all")
    ids, z = load_roi_responses(release, "subj01", ["V1"], "all", zscore_sessions=True)
    assert not np.allclose(raw["V1"], z["V1"])
    vox = np.flatnonzero(LABELS.reshape(-1) == 1)
    # by hand: z-score every voxel within each session, then average repeats
    per_kid = {k: [] for k in ids.tolist()}
    for s, kids in SESSIONS.items():
        vals = np.array([[raw_beta(k, v, s) for v in vox] for k in kids]) / 300.0
        vals = (vals - vals.mean(0)) / (vals.std(0) + 1e-8)
        for k, row in zip(kids, vals, strict=True):
            per_kid[k].append(row)
    want = np.array([np.mean(per_kid[k], axis=0) for k in ids.tolist()])
    np.testing.assert_allclose(z["V1"], want, rtol=1e-5, atol=1e-6)


def test_first_caption_and_coco_ids(release):
    st = subject_stimuli(release, "subj01", "paper")
    assert st.columns.tolist() == ["nsd_id", "coco_id", "caption"]
    assert st["coco_id"].tolist() == [13, 14, 15]
    assert st["caption"].tolist() == ["caption 1 of 13", "caption 1 of 14", "caption 1 of 15"]


def test_label_table_names_are_normalised(tmp_path):
    ctab = tmp_path / "x.ctab"
    ctab.write_text("0 ???\n1 L_V1_ROI 255 0 0 0\n2 MST\n")
    assert read_parcel_table(ctab)["name"].tolist() == ["V1", "MST"]


def test_missing_file_names_its_path(release):
    release.responses("subj01").unlink()
    with pytest.raises(InputError, match=r"responses\.tsv"):
        load_roi_responses(release, "subj01", "all", "paper")


def test_unknown_roi_is_a_config_error(release):
    with pytest.raises(InputError, match="rois"):
        load_roi_responses(release, "subj01", ["V9"], "paper")


def test_trial_count_mismatch_is_reported(release):
    path = release.betas("subj01", 1)
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[..., :3], np.eye(4)), path)
    with pytest.raises(InputError, match="3 trials"):
        load_roi_responses(release, "subj01", "all", "paper")


def test_no_betas_is_reported(release):
    for s in SESSIONS:
        release.betas("subj01", s).unlink()
    with pytest.raises(InputError, match="no betas found for subj01"):
        load_roi_responses(release, "subj01", "all", "paper")


# --------------------------------------------------------------------------- NSD fidelity, bad inputs

def test_sessions_key_selects_sessions(release):
    from brainalign.data.nsd import wanted_sessions

    assert wanted_sessions([1, 2, 3, 40], None) == wanted_sessions([1, 2, 3, 40], "all") == [1, 2, 3, 40]
    assert wanted_sessions(list(range(1, 41)), {"max": 37}) == list(range(1, 38))
    assert wanted_sessions([1, 2, 3], [3, 1]) == [1, 3]
    for bad in ({"max": 0}, {"last": 3}, ["1"], 5):
        with pytest.raises(InputError, match="config key 'sessions'"):
            wanted_sessions([1, 2], bad)
    ids, rois = load_roi_responses(release, "subj01", ["V1"], "paper", sessions={"max": 1})
    vox = np.flatnonzero(LABELS.reshape(-1) == 1)
    assert ids.tolist() == [3, 4]
    np.testing.assert_allclose(rois["V1"], expected([3, 4], vox, {1: SESSIONS[1]}), rtol=1e-6)
    assert subject_stimuli(release, "subj01", "paper", sessions=[1])["nsd_id"].tolist() == [3, 4]
    with pytest.raises(InputError, match="selects none of subj01's sessions 1..2"):
        load_roi_responses(release, "subj01", ["V1"], "paper", sessions=[7])


def test_coco_captions_from_their_own_folder_or_a_message_where_to_get_them(release, tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    for split in ("train2017", "val2017"):
        release.captions(split).rename(coco / f"captions_{split}.json")
    with pytest.raises(InputError) as exc:
        subject_stimuli(release, "subj01", "paper")
    assert "annotations_trainval2017.zip" in str(exc.value) and "coco_annotations" in str(exc.value)
    assert str(release.captions("train2017")) in str(exc.value)
    moved = NSDLayout(release.root, coco)
    assert subject_stimuli(moved, "subj01", "paper")["caption"].tolist()[0] == "caption 1 of 13"


def test_without_the_freesurfer_folder_ingest_uses_the_packaged_parcel_names(release):
    ids_a, rois_a = load_roi_responses(release, "subj01", ["V1", "V2"], "paper")
    release.parcel_table.unlink()
    ids_b, rois_b = load_roi_responses(release, "subj01", ["V1", "V2"], "paper")
    assert ids_a.tolist() == ids_b.tolist()
    for roi in ("V1", "V2"):
        np.testing.assert_array_equal(rois_a[roi], rois_b[roi])


def test_hdf5_reads_only_the_parcels_box_and_equals_the_volume(release):
    """Per z-slab reads of the parcels' bounding box give the same betas as the whole volume."""
    from brainalign.data.nsd import _read_hdf5_voxels

    data = np.asanyarray(nib.load(release.betas("subj01", 1)).dataobj)  # (X, Y, Z, trials)
    path = release.betas("subj01", 1, "hdf5")
    with h5py.File(path, "w") as f:
        f.create_dataset("betas", data=data.transpose(3, 2, 1, 0), chunks=(4, 1, 1, 1))
    for voxels in (np.array([4]), np.flatnonzero(LABELS.reshape(-1) == 4), np.arange(LABELS.size)[::-1]):
        want = data.reshape(-1, data.shape[-1])[voxels].T
        np.testing.assert_array_equal(_read_hdf5_voxels(path, voxels), want)


def rewrite_betas(layout: NSDLayout, session: int, change) -> None:
    """Replace one session's betas by ``change(betas)`` (float32 when the change makes NaN)."""
    path = layout.betas("subj01", session)
    data = change(np.asanyarray(nib.load(path).dataobj).astype(np.float32))
    dtype = np.int16 if np.isfinite(data).all() else np.float32
    nib.save(nib.Nifti1Image(data.astype(dtype), np.eye(4)), path)


@pytest.mark.parametrize(("break_it", "named"), [
    (lambda r: r.betas("subj01", 1).write_bytes(r.betas("subj01", 1).read_bytes()[:60]),
     "betas_session01.nii.gz: unreadable"),
    (lambda r: (r.betas("subj01", 2).unlink(), h5py.File(r.betas("subj01", 2, "hdf5"), "w").create_dataset(
        "betas", data=np.zeros((4, 2, 3), np.int16))), "betas_session02.hdf5: needs a dataset 'betas' of shape"),
    (lambda r: pd.read_csv(r.responses("subj01"), sep="\t").drop(columns="73KID").to_csv(
        r.responses("subj01"), sep="\t", index=False), "responses.tsv: columns ['73KID'] missing"),
    (lambda r: r.parcel_table.write_text("0 Unknown\n1 V1\n2 MST\n4 V2\n7 V7\n"), "parcel 'V7' has no voxels"),
    (lambda r: pd.read_csv(r.responses("subj01"), sep="\t").replace({"73KID": {4: 73001}}).to_csv(
        r.responses("subj01"), sep="\t", index=False), "responses.tsv: 73KID 73001 (row 4) is outside 1..73000"),
    (lambda r: rewrite_betas(r, 2, lambda d: np.where(LABELS[..., None] == 4, np.nan, d)),
     "betas_session02.nii.gz: NaN or inf betas at 5 voxels (first in parcel 'V2')"),
    (lambda r: [rewrite_betas(r, s, lambda d: np.where(LABELS[..., None] == 1, 0, d)) for s in SESSIONS],
     "HCP_MMP1.nii.gz: parcel 'V1' (4 voxels) has zero betas in every session"),
])
def test_a_bad_release_file_fails_with_one_line_naming_it(release, break_it, named):
    break_it(release)
    rois = ["V1", "V7"] if "V7" in named else "all"
    with pytest.raises(InputError) as exc:
        load_roi_responses(release, "subj01", rois, "paper")
    assert named in str(exc.value) and "\n" not in str(exc.value)


def test_stimulus_without_stim_info_row_or_caption_is_named(release):
    info = pd.read_csv(release.stim_info, index_col=0)
    info[info.nsdId != 4].to_csv(release.stim_info)  # 73KID 5 gone
    with pytest.raises(InputError, match=r"no row for 73KIDs \[5\]"):
        subject_stimuli(release, "subj01", "paper")
    info.to_csv(release.stim_info)
    anns = json.loads(release.captions("train2017").read_text())
    anns["annotations"] = [a for a in anns["annotations"] if a["image_id"] != 14]
    release.captions("train2017").write_text(json.dumps(anns))
    with pytest.raises(InputError, match=r"no COCO caption for 73KIDs \[4\]"):
        subject_stimuli(release, "subj01", "paper")


def test_stimulus_images_are_read_a_batch_at_a_time_and_checked(tmp_path):
    from brainalign.models.features import StimulusImages, load_stimulus_images

    path = tmp_path / "nsd_stimuli.hdf5"
    brick = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    with h5py.File(path, "w") as f:
        f["imgBrick"] = brick
    images = StimulusImages(path, [5, 1, 5, 3])
    assert len(images) == 4 and images.shape == (4, 4, 4, 3)
    np.testing.assert_array_equal(images[1:3], brick[[0, 4]])
    np.testing.assert_array_equal(images[0], brick[4])
    np.testing.assert_array_equal(load_stimulus_images(path, [5, 1, 5, 3]), brick[[4, 0, 4, 2]])
    with pytest.raises(InputError, match="73KID out of range 1..6"):
        StimulusImages(path, [7])
    # chunked and compressed, chunks spanning several images and split in space: the same images
    for chunks in [(4, 2, 2, 1), (1, 4, 4, 3)]:
        with h5py.File(path, "w") as f:
            f.create_dataset("imgBrick", data=brick, chunks=chunks, compression="gzip")
        images = StimulusImages(path, [5, 1, 5, 3, 6, 2])
        np.testing.assert_array_equal(images[:], brick[[4, 0, 4, 2, 5, 1]])
        assert images.cache_bytes >= chunks[0] * 4 * 4 * 3
    with h5py.File(path, "w") as f:
        f["images"] = brick
    with pytest.raises(InputError, match="no dataset 'imgBrick'"):
        StimulusImages(path, [1])
    with h5py.File(path, "w") as f:
        f["imgBrick"] = brick[..., 0]
    with pytest.raises(InputError, match=r"imgBrick has shape \(6, 4, 4\)"):
        StimulusImages(path, [1])


def test_noise_ceiling_is_nsds_formula_for_the_repeats_averaged(release):
    """NC = 100 ncsnr^2 / (ncsnr^2 + (A/3 + B/2 + C/1) / (A + B + C)) per voxel, averaged over a
    parcel's valid voxels; the paper split averages 73KIDs 3 and 4 twice and 5 once (A, B, C = 0, 2, 1)."""
    from brainalign.data.nsd import noise_ceiling, parcel_noise_ceilings

    ncsnr = (np.arange(LABELS.size, dtype=np.float32) * 0.1).reshape(SHAPE)
    first_v1 = int(np.flatnonzero(LABELS.reshape(-1) == 1)[0])
    ncsnr.reshape(-1)[first_v1] = np.nan  # an invalid voxel
    nib.save(nib.Nifti1Image(ncsnr, np.eye(4)), release.ncsnr("subj01"))
    got = parcel_noise_ceilings(release, "subj01", ["V1", "V2"], "paper").set_index("roi")
    assert got[["A", "B", "C"]].iloc[0].tolist() == [0, 2, 1]
    noise = (0 / 3 + 2 / 2 + 1 / 1) / 3
    for roi, label in (("V1", 1), ("V2", 4)):
        vox = [v for v in np.flatnonzero(LABELS.reshape(-1) == label) if v != first_v1]
        s2 = (np.array(vox) * 0.1) ** 2
        assert got.loc[roi, "noise_ceiling"] == pytest.approx(np.mean(100 * s2 / (s2 + noise)), rel=1e-6)
        assert got.loc[roi, "n_valid"] == len(vox)
    assert got.loc["V1", "n_voxels"] == got.loc["V1", "n_valid"] + 1
    # every image seen 3 times and ncsnr 1: 100 / (1 + 1/3) = 75 %
    assert noise_ceiling(np.array([1.0]), np.array([3, 3, 3]))[0] == pytest.approx(75.0)
    assert noise_ceiling(np.array([0.0]), np.array([1]))[0] == 0.0
    with pytest.raises(InputError, match="ncsnr.nii.gz"):
        parcel_noise_ceilings(release, "subj02", ["V1"], "paper")


def test_halves_hold_the_odd_numbered_trials_of_each_image(release, tmp_path):
    """Half A = each image's 1st, 3rd, ... trial in session order (image 1 is shown twice in
    session 1, images 3 and 4 once per session); half B follows from the mean; the file keeps both."""
    from brainalign.alignment.ceiling import halves
    from brainalign.data.nsd import read_roi_responses, write_brain

    got = read_roi_responses(release, "subj01", ["V2"], "all", halves=True)
    voxels = np.flatnonzero(LABELS.reshape(-1) == 4)
    trials = [(s, k) for s, ks in SESSIONS.items() for k in ks]
    for i, kid in enumerate(got.stim_ids):
        mine = [s for s, k in trials if k == kid]
        assert got.repeats[i] == len(mine)
        odd = mine[0::2]
        assert got.repeats_a[i] == len(odd)
        want = np.mean([[raw_beta(int(kid), v, s) for v in voxels] for s in odd], axis=0) / 300.0
        np.testing.assert_allclose(got.half_a["V2"][i], want, rtol=1e-6)
    keep, a, b = halves(got.rois["V2"], got.half_a["V2"], got.repeats, got.repeats_a)
    assert got.stim_ids[keep].tolist() == [1, 3, 4]
    for row, kid in enumerate(got.stim_ids[keep]):
        even = [s for s, k in trials if k == kid][1::2]
        want = np.mean([[raw_beta(int(kid), v, s) for v in voxels] for s in even], axis=0) / 300.0
        np.testing.assert_allclose(b[row], want, rtol=1e-5)
    path = tmp_path / "brain.h5"
    write_brain(path, "subj01", "all", got.stim_ids, got.rois, got)
    with h5py.File(path) as f:
        assert f["repeats"][()].tolist() == got.repeats.tolist()
        np.testing.assert_array_equal(f["half_a/V2"][()], got.half_a["V2"])
    # without halves nothing extra is held
    plain = read_roi_responses(release, "subj01", ["V2"], "all")
    assert plain.half_a is None
    np.testing.assert_array_equal(plain.rois["V2"], got.rois["V2"])


def test_ingest_keeps_each_voxels_ncsnr_and_its_ceiling_for_the_trials_averaged(release, tmp_path):
    """The brain file holds ncsnr/<roi> (the volume's value at each parcel voxel, in column order) and
    brain_voxel_ceilings gives NSD's NC (a fraction) for the repeats the file averaged; without
    ncsnr.nii.gz there is none."""
    from brainalign.data.nsd import BRAIN_FORMAT, brain_voxel_ceilings, read_roi_responses, write_brain

    plain = read_roi_responses(release, "subj01", ["V1", "V2"], "paper")
    write_brain(tmp_path / "plain.h5", "subj01", "paper", plain.stim_ids, plain.rois, plain)
    assert plain.ncsnr is None and brain_voxel_ceilings(tmp_path / "plain.h5") is None
    ncsnr = (np.arange(LABELS.size, dtype=np.float32) * 0.1 + 0.05).reshape(SHAPE)
    nib.save(nib.Nifti1Image(ncsnr, np.eye(4)), release.ncsnr("subj01"))
    got = read_roi_responses(release, "subj01", ["V1", "V2"], "paper")
    write_brain(tmp_path / "b.h5", "subj01", "paper", got.stim_ids, got.rois, got)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f.attrs["format"] == BRAIN_FORMAT
    ceilings = brain_voxel_ceilings(tmp_path / "b.h5")
    noise = (0 / 3 + 2 / 2 + 1 / 1) / 3  # the paper split: 73KIDs 3, 4 twice, 5 once
    for (roi, label), nc in zip((("V1", 1), ("V2", 4)), ceilings, strict=True):
        voxels = np.flatnonzero(LABELS.reshape(-1) == label)
        np.testing.assert_allclose(got.ncsnr[roi], voxels * 0.1 + 0.05, rtol=1e-6)
        s2 = (voxels * 0.1 + 0.05) ** 2
        np.testing.assert_allclose(nc, s2 / (s2 + noise), rtol=1e-6)
        assert nc.shape == (got.rois[roi].shape[1],)
