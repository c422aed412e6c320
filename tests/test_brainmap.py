"""Parcel values on fsaverage5: atlas reading, the mini-NSD atlas, vertex values and the brain-map figure."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainalign.brainmap import (
    FSAVERAGE5_VERTICES,
    FSAVERAGE_VERTICES,
    SurfaceAtlas,
    load_atlas,
    pial_coordinates,
    plot_brain_map,
    roi_vertex_values,
    write_mini_atlas,
)
from brainalign.io import InputError
from brainalign.mini_nsd import PLANTED
from brainalign.nsd import NSDLayout
from brainalign.resources import hcp_parcels

MINI_IDS = {int(i): n for i, n in zip(hcp_parcels()["index"], hcp_parcels()["name"], strict=True) if n in PLANTED}


def write_ctab(path: Path, names_by_id: dict[int, str]) -> Path:
    """A FreeSurfer colour table (``id name r g b a``), names in the HCP ``L_<name>_ROI`` style."""
    lines = ["0 ???? 0 0 0 0"] + [f"{i} L_{n}_ROI {i % 256} 40 90 0" for i, n in sorted(names_by_id.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mgz(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.MGHImage(values.astype(np.int32).reshape(-1, 1, 1), np.eye(4)), path)
    return path


@pytest.fixture(scope="module")
def mini_atlas(tmp_path_factory) -> SurfaceAtlas:
    layout = NSDLayout(tmp_path_factory.mktemp("nsd"))
    write_ctab(layout.parcel_table, MINI_IDS)
    lh, rh = write_mini_atlas(layout, MINI_IDS)
    assert (lh, rh) == (layout.fsaverage_labels("lh"), layout.fsaverage_labels("rh"))
    for path in (lh, rh):  # the real release's length; only the fsaverage5 vertices are painted
        data = np.asarray(nib.load(path).dataobj).reshape(-1)
        assert data.shape == (FSAVERAGE_VERTICES,)
        assert not data[FSAVERAGE5_VERTICES:].any()
    return load_atlas(lh, rh, layout.parcel_table)


def test_fsaverage_annotation_is_reduced_to_its_first_fsaverage5_vertices(tmp_path):
    full = np.arange(FSAVERAGE_VERTICES) % 181
    small = (np.arange(FSAVERAGE5_VERTICES) * 7) % 181
    atlas = load_atlas(write_mgz(tmp_path / "lh.HCP_MMP1.mgz", full), write_mgz(tmp_path / "rh.HCP_MMP1.mgz", small),
                       write_ctab(tmp_path / "HCP_MMP1.mgz.ctab", {1: "V1", 2: "MST", 8: "4"}))
    np.testing.assert_array_equal(atlas.lh, full[:FSAVERAGE5_VERTICES])
    np.testing.assert_array_equal(atlas.rh, small)
    assert atlas.names == {1: "V1", 2: "MST", 8: "4"}


def test_wrong_length_names_the_file(tmp_path):
    ok = write_mgz(tmp_path / "rh.HCP_MMP1.mgz", np.zeros(FSAVERAGE5_VERTICES))
    bad = write_mgz(tmp_path / "lh.HCP_MMP1.mgz", np.zeros(40962))  # fsaverage6
    ctab = write_ctab(tmp_path / "HCP_MMP1.mgz.ctab", {1: "V1"})
    with pytest.raises(InputError, match=r"lh\.HCP_MMP1\.mgz.*40962 values") as err:
        load_atlas(bad, ok, ctab)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_names_its_path(tmp_path):
    ok = write_mgz(tmp_path / "lh.HCP_MMP1.mgz", np.zeros(FSAVERAGE5_VERTICES))
    ctab = write_ctab(tmp_path / "HCP_MMP1.mgz.ctab", {1: "V1"})
    missing = tmp_path / "nowhere" / "rh.HCP_MMP1.mgz"
    with pytest.raises(InputError, match="not found") as err:
        load_atlas(ok, missing, ctab)
    assert str(missing) in str(err.value)


def test_mini_atlas_paints_every_parcel_in_both_hemispheres(mini_atlas):
    assert mini_atlas.names == MINI_IDS
    for hemi in ("lh", "rh"):
        labels = mini_atlas.labels(hemi)
        assert labels.shape == (FSAVERAGE5_VERTICES,)
        assert set(np.unique(labels)) == {0, *MINI_IDS}
        counts = {name: int((labels == i).sum()) for i, name in MINI_IDS.items()}
        assert min(counts.values()) >= 20, (hemi, counts)
        pial = pial_coordinates(hemi)
        y = {name: pial[labels == i, 1].mean() for i, name in MINI_IDS.items()}
        x = {name: pial[labels == i, 0].mean() for i, name in MINI_IDS.items()}
        assert y["V1"] < y["FFC"] < y["OFC"], y  # posterior to anterior
        assert all((v < 0) == (hemi == "lh") for v in x.values()), x  # each on its own side


def test_roi_vertex_values_are_exact_and_nan_elsewhere():
    lh = np.array([0, 1, 1, 2, 8, 0] + [0] * (FSAVERAGE5_VERTICES - 6))
    rh = np.array([2, 2, 1, 0, 8, 1] + [0] * (FSAVERAGE5_VERTICES - 6))
    atlas = SurfaceAtlas(lh=lh, rh=rh, names={1: "V1", 2: "MST", 8: "4"})
    vl, vr = roi_vertex_values(atlas, {"V1": 0.25, "4": -1.5, "MST": float("nan")})
    assert vl.dtype == vr.dtype == np.float64 and vl.shape == vr.shape == (FSAVERAGE5_VERTICES,)
    np.testing.assert_array_equal(vl[:6], [np.nan, 0.25, 0.25, np.nan, -1.5, np.nan])
    np.testing.assert_array_equal(vr[:6], [np.nan, np.nan, 0.25, np.nan, -1.5, 0.25])
    assert np.isnan(vl[6:]).all() and np.isnan(vr[6:]).all()
    with pytest.raises(InputError, match="L_V1_ROI"):
        roi_vertex_values(atlas, {"L_V1_ROI": 1.0})


@pytest.mark.parametrize("symmetric", [False, True])
def test_plot_brain_map_writes_png_and_pdf(mini_atlas, tmp_path, symmetric):
    import matplotlib.image

    values = {name: (k - 5) / 6 for k, name in enumerate(MINI_IDS.values())}
    values["OFC"] = float("nan")  # shown as background
    png, pdf = tmp_path / "map.png", tmp_path / "map.pdf"
    plot_brain_map(values, mini_atlas, png, pdf, title="Brain score per parcel", label="CKA (unitless)",
                   cmap="RdBu_r" if symmetric else "viridis", symmetric=symmetric)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.pdf", "map.png"]  # no temporary files left
    assert png.stat().st_size > 30_000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    img = matplotlib.image.imread(png)
    assert img.shape[0] > 500 and img.shape[1] > 800
    rgb = img[..., :3]
    assert rgb.std() > 0.05
    coloured = (rgb.max(-1) - rgb.min(-1)) > 0.2  # the painted parcels, not the grey background
    assert coloured.mean() > 0.005
