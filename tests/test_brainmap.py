"""Parcel values on fsaverage5: atlas reading, the mini-NSD atlas, vertex values and the brain-map figure."""

from __future__ import annotations

import functools
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

PNG_DPI, PNG_PAD = 150, 0.1  # plot_brain_map's savefig: dpi, pad_inches (bbox_inches="tight")
MARGIN_PX = 4  # rasterised face edges and antialiasing around the projected vertices


def draw_alone(name, atlas, tmp_path, monkeypatch):
    """plot_brain_map with one parcel's value (every other parcel is background): the PNG, the figure
    it was saved from (kept open by catching pyplot.close), and what each nilearn plot_surf call was
    given: (hemi, mesh coordinates, per-vertex map)."""
    import matplotlib.image
    import matplotlib.pyplot as plt
    from nilearn import plotting

    kept, surfs = [], []
    close, plot_surf = plt.close, plotting.plot_surf

    def record(surf_mesh, surf_map=None, **kwargs):
        surfs.append((kwargs["hemi"], np.array(surf_mesh[0], dtype=np.float64), np.array(surf_map, dtype=float)))
        return plot_surf(surf_mesh, surf_map=surf_map, **kwargs)

    monkeypatch.setattr(plt, "close", kept.append)
    monkeypatch.setattr(plotting, "plot_surf", record)
    png = tmp_path / f"{name}.png"
    plot_brain_map({name: 1.0}, atlas, png, tmp_path / f"{name}.pdf", title=f"{name} alone", label="value")
    monkeypatch.setattr(plt, "close", close)
    monkeypatch.setattr(plotting, "plot_surf", plot_surf)
    (fig,) = kept
    return matplotlib.image.imread(png)[..., :3], fig, surfs


def png_pixels(fig, display_xy, png_shape):
    """Display coordinates of ``fig`` (pixels at fig.dpi) -> (column, row) of the PNG it was saved to,
    which savefig cropped to the figure's tight bounding box plus the padding."""
    bbox = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    # the crop is the one savefig made: the PNG's size says so
    assert abs((bbox.width + 2 * PNG_PAD) * PNG_DPI - png_shape[1]) < 2, (bbox, png_shape)
    assert abs((bbox.height + 2 * PNG_PAD) * PNG_DPI - png_shape[0]) < 2, (bbox, png_shape)
    inches = np.asarray(display_xy, dtype=np.float64) / fig.dpi
    col = (inches[:, 0] - (bbox.x0 - PNG_PAD)) * PNG_DPI
    row = ((bbox.y1 + PNG_PAD) - inches[:, 1]) * PNG_DPI
    return col, row


@functools.cache
def inflated_fsaverage5(hemi):
    """fsaverage5 inflated vertex coordinates from nilearn (read here, not through brainalign), centred as
    nilearn's plot_surf centres the mesh it draws."""
    from nilearn import datasets

    xyz = np.asarray(datasets.load_fsaverage("fsaverage5")["inflated"].parts[
        {"lh": "left", "rh": "right"}[hemi]].coordinates, dtype=np.float64)
    return xyz - xyz.mean(axis=0)


def parcel_boxes(fig, labels, parcel_id, png_shape):
    """Per 3-D panel: (hemisphere, the PNG box [c0, c1, r0, r1] holding every vertex of the parcel as
    that panel's camera projects it). The parcel's vertices come from the atlas files, their positions
    from nilearn's inflated mesh."""
    from mpl_toolkits.mplot3d import proj3d

    boxes = []
    for ax in (a for a in fig.axes if a.name == "3d"):
        hemi = {"left": "lh", "right": "rh"}[ax.texts[0].get_text().split()[0]]  # the panel's caption
        xyz = inflated_fsaverage5(hemi)[labels[hemi] == parcel_id]
        x, y, _ = proj3d.proj_transform(xyz[:, 0], xyz[:, 1], xyz[:, 2], ax.get_proj())
        col, row = png_pixels(fig, ax.transData.transform(np.column_stack([x, y])), png_shape)
        boxes.append((hemi, (round(col.min()) - MARGIN_PX, round(col.max()) + MARGIN_PX,
                             round(row.min()) - MARGIN_PX, round(row.max()) + MARGIN_PX)))
    return boxes


def coloured_pixels(rgb, fig):
    """(rows, cols) of the PNG's saturated pixels (the value's colour, not the grey background), the
    colour bar left out."""
    (bar,) = [a for a in fig.axes if a.name != "3d"]
    ext = bar.get_window_extent(fig.canvas.get_renderer())
    col, row = png_pixels(fig, [(ext.x0, ext.y0), (ext.x1, ext.y1)], rgb.shape)
    mask = (rgb.max(-1) - rgb.min(-1)) > 0.2
    mask[int(row.min()) - MARGIN_PX: int(row.max()) + MARGIN_PX + 1,
         int(col.min()) - MARGIN_PX: int(col.max()) + MARGIN_PX + 1] = False
    return np.nonzero(mask)


def inside(rows, cols, boxes):
    hit = np.zeros(rows.shape, dtype=bool)
    for _, (c0, c1, r0, r1) in boxes:
        hit |= (cols >= c0) & (cols <= c1) & (rows >= r0) & (rows <= r1)
    return hit


def test_one_parcel_drawn_alone_is_coloured_where_that_parcel_is(mini_atlas_files, mini_atlas, tmp_path,
                                                                monkeypatch):
    """V1 (id 1, occipital) and OFC (id 93, frontal), each drawn alone. Vertices: each of the six surface
    plots gets its hemisphere's inflated mesh and a map that is finite exactly on the parcel's vertices
    (read from the atlas files here). Pixels: every coloured pixel of the PNG lies where the parcel's
    vertices project in some panel (their box in that panel's camera, a few pixels of margin), both
    hemispheres show it, and the other parcel's pixels are elsewhere. Shuffled parcel labels, an
    off-by-one parcel index or vertex index, or swapped hemispheres all fail."""
    lh, rh, _ = mini_atlas_files
    labels = {hemi: np.asarray(nib.load(p).dataobj).reshape(-1)[:FSAVERAGE5_VERTICES].astype(int)
              for hemi, p in (("lh", lh), ("rh", rh))}
    id_of = {n: i for i, n in MINI_IDS.items()}
    drawn = {}
    for name in ("V1", "OFC"):
        assert all((labels[h] == id_of[name]).sum() >= 20 for h in labels), name
        rgb, fig, surfs = draw_alone(name, mini_atlas, tmp_path, monkeypatch)
        assert [h for h, _, _ in surfs] == ["left"] * 3 + ["right"] * 3, [h for h, _, _ in surfs]
        for side, mesh, vertex_map in surfs:
            hemi = {"left": "lh", "right": "rh"}[side]
            # (nilearn centres the mesh it is given, in place: compare centred meshes)
            np.testing.assert_allclose(mesh - mesh.mean(axis=0), inflated_fsaverage5(hemi), rtol=0, atol=1e-6,
                                       err_msg=hemi)
            painted = np.isfinite(vertex_map)
            want = labels[hemi] == id_of[name]
            assert (painted == want).all(), (f"{name} alone, {hemi}: {int((painted & ~want).sum())} vertices "
                                             f"painted off the parcel, {int((want & ~painted).sum())} of its "
                                             f"{int(want.sum())} not painted")
            assert (vertex_map[painted] == 1.0).all()
        try:
            boxes = parcel_boxes(fig, labels, id_of[name], rgb.shape)
            rows, cols = coloured_pixels(rgb, fig)
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)
        assert rows.size >= 100, f"{name} alone: only {rows.size} coloured pixels"
        out = ~inside(rows, cols, boxes)
        assert not out.any(), (f"{name} alone: {int(out.sum())} of {rows.size} coloured pixels lie outside "
                               f"the parcel's projected boxes {boxes}, e.g. (row, col) "
                               f"{list(zip(rows[out][:5].tolist(), cols[out][:5].tolist(), strict=True))}")
        for hemi in ("lh", "rh"):
            shown = inside(rows, cols, [b for b in boxes if b[0] == hemi]).sum()
            assert shown >= 20, f"{name} alone: {shown} coloured pixels on the {hemi} panels"
        drawn[name] = rows, cols, boxes
    for a, b in (("V1", "OFC"), ("OFC", "V1")):
        rows, cols, _ = drawn[a]
        overlap = inside(rows, cols, drawn[b][2]).mean()
        assert overlap < 0.05, f"{a} alone: {overlap:.0%} of its pixels lie in {b}'s boxes"
