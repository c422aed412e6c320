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

from brainalign.io import InputError
from brainalign.nsd import NSDLayout, load_roi_responses, read_parcel_table, subject_stimuli

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
