"""Parcel values on fsaverage5: atlas reading, the mini-NSD atlas, vertex values and the brain-map figure."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainalign.data.mini_nsd import PLANTED
from brainalign.data.nsd import NSDLayout
from brainalign.figures.brainmap import (
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
def mini_atlas_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The mini-NSD atlas files: lh and rh label volumes and the colour table."""
    layout = NSDLayout(tmp_path_factory.mktemp("nsd"))
    write_ctab(layout.parcel_table, MINI_IDS)
    lh, rh = write_mini_atlas(layout, MINI_IDS)
    assert (lh, rh) == (layout.fsaverage_labels("lh"), layout.fsaverage_labels("rh"))
    for path in (lh, rh):  # the real release's length; only the fsaverage5 vertices are painted
        data = np.asarray(nib.load(path).dataobj).reshape(-1)
        assert data.shape == (FSAVERAGE_VERTICES,)
        assert not data[FSAVERAGE5_VERTICES:].any()
    return lh, rh, layout.parcel_table


@pytest.fixture(scope="module")
def mini_atlas(mini_atlas_files) -> SurfaceAtlas:
    return load_atlas(*mini_atlas_files)


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


# ----------------------------------------------------------------------------- where a parcel is drawn

def brute_force_view(coords, faces, camera, scale, pad, shape):
    """Per pixel centre of a view: the covering triangles (point-in-triangle in the projected plane) and
    their interpolated depths, one pixel at a time over every triangle (the slow, obvious z-buffer)."""
    (da, ds), (ha, hs), (va, vs) = camera
    right, up = hs * coords[:, ha], vs * coords[:, va]
    xy = np.stack([(right - right.min()) * scale + pad, (up.max() - up) * scale + pad], axis=1)
    depth = ds * coords[:, da]
    a, b, c = xy[faces[:, 0]], xy[faces[:, 1]], xy[faces[:, 2]]

    def covering(px, py):
        den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            w0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / den
            w1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / den
        w2 = 1 - w0 - w1
        hit = (np.abs(den) > 1e-12) & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        z = w0 * depth[faces[:, 0]] + w1 * depth[faces[:, 1]] + w2 * depth[faces[:, 2]]
        return np.flatnonzero(hit), z[hit]

    assert xy[:, 0].max() < shape[1] and xy[:, 1].max() < shape[0]
    return covering


@pytest.mark.parametrize(("hemi", "view"), [("lh", "lateral"), ("rh", "medial"), ("lh", "ventral")])
def test_each_view_shows_the_nearest_surface_at_every_pixel(hemi, view):
    """A figure view (:func:`view_vertices`, back faces culled) against every triangle tested at every
    sampled pixel centre: background exactly where no triangle covers the pixel, else a vertex of a
    covering triangle at the nearest depth."""
    from brainalign.figures.brainmap import _fsaverage5, view_camera, view_vertices

    scale, pad = 0.6, 3
    vertex = view_vertices(hemi, view, scale=scale, pad=pad)
    coords, faces = _fsaverage5()[hemi]["inflated"]
    faces = np.asarray(faces, dtype=np.int64)
    covering = brute_force_view(coords, faces, view_camera(hemi, view), scale, pad, vertex.shape)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, vertex.shape[0], 400), rng.integers(0, vertex.shape[1], 400)
    seen = 0
    for r, c in zip(rows, cols, strict=True):
        hit, z = covering(c + 0.5, r + 0.5)
        if hit.size == 0:
            assert vertex[r, c] == -1, (r, c)
            continue
        seen += 1
        nearest = hit[z <= z.min() + 1e-9]
        assert vertex[r, c] in set(faces[nearest].ravel().tolist()), (r, c, vertex[r, c], faces[nearest])
    assert 100 < seen < 400  # the sample holds both surface and background


def test_one_parcel_drawn_alone_is_coloured_where_that_parcel_is(mini_atlas_files, mini_atlas, tmp_path):
    """V1 (id 1, occipital) and OFC (id 93, frontal), each drawn alone: in every view a pixel is coloured
    exactly where its visible vertex carries the parcel's label (read from the atlas files here), both
    hemispheres show it, the two parcels' pixels never meet, and each lies at its end of the brain
    (posterior: right of the left lateral view, left of its medial view; anterior: left of the ventral
    views). Shuffled labels, an off-by-one parcel index, swapped hemispheres or a mirrored camera all fail.
    The PNG shows the coloured pixels too."""
    import matplotlib.image

    from brainalign.figures.brainmap import brain_map_panels

    lh, rh, _ = mini_atlas_files
    labels = {hemi: np.asarray(nib.load(p).dataobj).reshape(-1)[:FSAVERAGE5_VERTICES].astype(int)
              for hemi, p in (("lh", lh), ("rh", rh))}
    id_of = {n: i for i, n in MINI_IDS.items()}
    drawn = {}
    for name in ("V1", "OFC"):
        panels, _, _ = brain_map_panels({name: 1.0}, mini_atlas)
        assert [(p["hemi"], p["view"]) for p in panels] == [(h, v) for h in ("lh", "rh")
                                                             for v in ("lateral", "medial", "ventral")]
        per_hemi = {"lh": 0, "rh": 0}
        for p in panels:
            rgb, vertex = p["rgb"], p["vertex"]
            coloured = (rgb.max(-1) - rgb.min(-1)) > 0.2
            want = np.zeros(vertex.shape, dtype=bool)
            want[vertex >= 0] = labels[p["hemi"]][vertex[vertex >= 0]] == id_of[name]
            assert (coloured == want).all(), (name, p["hemi"], p["view"], int((coloured != want).sum()))
            assert (rgb[vertex < 0] == 1.0).all()  # background white
            per_hemi[p["hemi"]] += int(coloured.sum())
            drawn[name, p["hemi"], p["view"]] = coloured
        assert min(per_hemi.values()) >= 20, (name, per_hemi)
        png = tmp_path / f"{name}.png"
        plot_brain_map({name: 1.0}, mini_atlas, png, tmp_path / f"{name}.pdf", title=f"{name} alone", label="value")
        img = matplotlib.image.imread(png)[..., :3]
        assert ((img.max(-1) - img.min(-1)) > 0.2).sum() >= 100
    for key in [k for k in drawn if k[0] == "V1"]:
        assert not (drawn[key] & drawn[("OFC", *key[1:])]).any(), key

    def column(name, hemi, view):  # mean column of the parcel's pixels, as a fraction of the view's width
        mask = drawn[name, hemi, view]
        return np.nonzero(mask)[1].mean() / mask.shape[1] if mask.any() else np.nan

    assert column("V1", "lh", "medial") < 0.3 and column("V1", "rh", "medial") > 0.7
    assert column("OFC", "lh", "ventral") < 0.5 and column("OFC", "rh", "ventral") < 0.5


def test_fsaverage5_read_from_nilearns_files_equals_nilearns_loader():
    """The meshes and sulcal depth read from nilearn's bundled files (no nilearn.datasets import) are the arrays
    nilearn.datasets.load_fsaverage gives."""
    from brainalign.figures.brainmap import _fsaverage5, _fsaverage5_from_nilearn

    direct, reference = _fsaverage5(), _fsaverage5_from_nilearn()
    for hemi in ("lh", "rh"):
        for key in ("pial", "sphere", "sulc"):
            assert direct[hemi][key].shape == reference[hemi][key].shape and len(direct[hemi][key]) == 10242
            np.testing.assert_array_equal(direct[hemi][key], reference[hemi][key], err_msg=(hemi, key))
        for got, want in zip(direct[hemi]["inflated"], reference[hemi]["inflated"], strict=True):
            np.testing.assert_array_equal(got, want, err_msg=(hemi, "inflated"))
    assert not np.array_equal(direct["lh"]["pial"], direct["rh"]["pial"])
