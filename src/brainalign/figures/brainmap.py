"""Per-parcel values painted on the fsaverage5 cortical surface.

Atlas. NSD ships the HCP-MMP1 parcellation on FreeSurfer's fsaverage as
``nsddata/freesurfer/fsaverage/label/{lh,rh}.HCP_MMP1.mgz`` (163,842 values per
hemisphere: 0 unlabelled, 1..180 the parcel index of ``HCP_MMP1.mgz.ctab``).

Projection to fsaverage5. fsaverage is an icosahedral mesh built by nested
subdivision, so its first 10,242 vertices *are* the fsaverage5 vertices (same
positions, same order); an fsaverage annotation is therefore reduced to
fsaverage5 by keeping its first 10,242 values (nearest-vertex decimation, no
resampling). A file that already holds 10,242 values is used as is; any other
length is an :class:`~brainalign.io.InputError`.

Mini-NSD atlas. :func:`write_mini_atlas` paints the mini-NSD parcels with a
stated rule: each parcel has a hard-coded approximate centre in MNI-like
coordinates (:data:`MINI_CENTRES`, left hemisphere; x is mirrored for the right),
snapped to the nearest vertex of the fsaverage5 pial surface; a vertex belongs
to the nearest centre when its great-circle distance on the registration sphere
(radius 100 mm) is at most :data:`MINI_RADIUS_MM`, else it is unlabelled (0).
Discs on the sphere are compact patches on the inflated surface (distance on the
folded pial surface would jump across sulci). The files have the real release's
length (163,842 values); only the first 10,242 (the fsaverage5 vertices) are
painted, the rest are 0.

Values are per parcel name; both hemispheres get the same value (the project
merges hemispheres per parcel name).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from brainalign.io import InputError, atomic_path, require_file

FSAVERAGE5_VERTICES = 10242
FSAVERAGE_VERTICES = 163842
HEMIS = ("lh", "rh")
FIX_ATLAS = ("download nsddata/freesurfer/fsaverage/label/{lh,rh}.HCP_MMP1.mgz and HCP_MMP1.mgz.ctab "
             "from the NSD release")

# Approximate centres (mm, MNI-like, left hemisphere) of the mini-NSD parcels.
MINI_CENTRES: dict[str, tuple[float, float, float]] = {
    "V1": (-8, -90, 2),  # calcarine sulcus
    "V2": (-12, -84, 22),  # cuneus, dorsal to V1
    "V3": (-22, -90, 14),  # dorsal occipital
    "V4": (-30, -80, -10),  # ventral occipital
    "LO1": (-38, -84, 4),  # lateral occipital
    "PIT": (-44, -72, -10),  # posterior inferotemporal
    "FFC": (-38, -54, -18),  # fusiform gyrus
    "TE2a": (-58, -22, -22),  # anterior inferior temporal gyrus
    "TGv": (-36, 8, -38),  # ventral temporal pole
    "55b": (-48, -2, 44),  # premotor, language network
    "OFC": (-24, 30, -16),  # orbitofrontal cortex
    "4": (-36, -24, 58),  # primary motor cortex (hand knob)
}
MINI_RADIUS_MM = 14.0
VIEWS = ("lateral", "medial", "ventral")


@dataclass(frozen=True)
class SurfaceAtlas:
    """Parcel id of every fsaverage5 vertex per hemisphere, and the id -> name table."""

    lh: np.ndarray
    rh: np.ndarray
    names: dict[int, str]

    def labels(self, hemi: str) -> np.ndarray:
        """Parcel ids of ``hemi`` ('lh' or 'rh'), shape (10242,)."""
        return {"lh": self.lh, "rh": self.rh}[hemi]


def _read_labels(path: Path) -> np.ndarray:
    import nibabel as nib

    path = require_file(path, "HCP-MMP1 surface annotation", FIX_ATLAS)
    try:
        data = np.asarray(nib.load(path).dataobj).reshape(-1)
    except Exception as e:  # not a readable image
        raise InputError(f"{path}: not a readable .mgz annotation ({e}); {FIX_ATLAS}") from e
    if data.size == FSAVERAGE_VERTICES:
        data = data[:FSAVERAGE5_VERTICES]  # fsaverage's first 10242 vertices are fsaverage5
    elif data.size != FSAVERAGE5_VERTICES:
        raise InputError(
            f"{path}: {data.size} values, expected {FSAVERAGE_VERTICES} (fsaverage) or "
            f"{FSAVERAGE5_VERTICES} (fsaverage5); use NSD's fsaverage HCP_MMP1.mgz"
        )
    return np.round(data).astype(np.int64)


def load_atlas(lh: Path, rh: Path, ctab: Path) -> SurfaceAtlas:
    """HCP-MMP1 on fsaverage5 from NSD's ``{lh,rh}.HCP_MMP1.mgz`` and ``HCP_MMP1.mgz.ctab``."""
    from brainalign.data.nsd import read_parcel_table

    table = read_parcel_table(Path(ctab))
    names = {int(i): str(n) for i, n in zip(table["index"], table["name"], strict=True)}
    return SurfaceAtlas(lh=_read_labels(Path(lh)), rh=_read_labels(Path(rh)), names=names)


#: nilearn's bundled fsaverage5 files per surface (nilearn/datasets/data/fsaverage5/<stem>_<left|right>.gii.gz)
FSAVERAGE5_FILES = {"pial": "pial", "sphere": "sphere", "inflated": "infl", "sulc": "sulc"}


@lru_cache
def _fsaverage5() -> dict:
    """fsaverage5 meshes and sulcal depth (bundled with nilearn, no download), read from nilearn's data files
    with nibabel: importing ``nilearn.datasets`` (scikit-learn, scipy.stats) took ~2 s of every brain-map job.
    The arrays are those of ``nilearn.datasets.load_fsaverage`` (a test compares them); where the files are
    not found (another nilearn layout) that function is used."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    root = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "fsaverage5" if spec else None
    if root is None or not all((root / f"{stem}_{part}.gii.gz").is_file() for stem in FSAVERAGE5_FILES.values()
                               for part in ("left", "right")):
        return _fsaverage5_from_nilearn()
    import nibabel as nib

    def arrays(stem: str, part: str) -> list[np.ndarray]:
        return [d.data for d in nib.load(str(root / f"{stem}_{part}.gii.gz")).darrays]

    out = {}
    for hemi, part in (("lh", "left"), ("rh", "right")):
        pial, sphere, inflated = (arrays(FSAVERAGE5_FILES[k], part) for k in ("pial", "sphere", "inflated"))
        out[hemi] = {
            "pial": np.asarray(pial[0], dtype=np.float64),
            "sphere": np.asarray(sphere[0], dtype=np.float64),
            "inflated": (np.asarray(inflated[0], dtype=np.float64), np.asarray(inflated[1])),
            "sulc": np.asarray(arrays(FSAVERAGE5_FILES["sulc"], part)[0], dtype=np.float64).reshape(-1),
        }
    return out


def _fsaverage5_from_nilearn() -> dict:
    """:func:`_fsaverage5` through ``nilearn.datasets`` (the reference its direct reading is tested against)."""
    from nilearn import datasets

    fs = datasets.load_fsaverage("fsaverage5")
    sulc = datasets.load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
    out = {}
    for hemi, part in (("lh", "left"), ("rh", "right")):
        out[hemi] = {
            "pial": np.asarray(fs["pial"].parts[part].coordinates, dtype=np.float64),
            "sphere": np.asarray(fs["sphere"].parts[part].coordinates, dtype=np.float64),
            "inflated": (np.asarray(fs["inflated"].parts[part].coordinates, dtype=np.float64),
                         np.asarray(fs["inflated"].parts[part].faces)),
            "sulc": np.asarray(sulc.data.parts[part], dtype=np.float64).reshape(-1),
        }
    return out


def pial_coordinates(hemi: str) -> np.ndarray:
    """fsaverage5 pial vertex coordinates of ``hemi`` ('lh' or 'rh'), mm, shape (10242, 3)."""
    return _fsaverage5()[hemi]["pial"].copy()


def paint_parcels(hemi: str, ids_by_name: Mapping[str, int]) -> np.ndarray:
    """Parcel id of each fsaverage5 vertex of ``hemi`` under the mini-NSD rule (see module doc)."""
    unknown = [n for n in ids_by_name if n not in MINI_CENTRES]
    if unknown:
        raise ValueError(f"no approximate centre for parcel(s) {unknown}; known: {list(MINI_CENTRES)}")
    surf = _fsaverage5()[hemi]
    pial, sphere = surf["pial"], surf["sphere"]
    unit = sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    sign = np.array([1.0 if hemi == "lh" else -1.0, 1.0, 1.0])
    names = list(ids_by_name)
    centres = [int(np.argmin(np.linalg.norm(pial - np.array(MINI_CENTRES[n]) * sign, axis=1))) for n in names]
    dist = np.arccos(np.clip(unit @ unit[centres].T, -1.0, 1.0)) * 100.0  # mm on the 100-mm sphere
    nearest = dist.argmin(axis=1)
    ids = np.array([ids_by_name[n] for n in names], dtype=np.int32)
    out = np.where(dist.min(axis=1) <= MINI_RADIUS_MM, ids[nearest], 0).astype(np.int32)
    return out


def write_mini_atlas(layout, parcel_names_by_id: Mapping[int, str]) -> tuple[Path, Path]:
    """Write ``{lh,rh}.HCP_MMP1.mgz`` of the mini-NSD to ``layout.fsaverage_labels(hemi)``.

    ``layout`` is a :class:`brainalign.data.nsd.NSDLayout`; ``parcel_names_by_id`` the
    parcels to paint (names must be in :data:`MINI_CENTRES`). Each file holds
    163,842 int32 values (fsaverage), of which the first 10,242 are painted.
    """
    import nibabel as nib

    ids_by_name = {str(n): int(i) for i, n in parcel_names_by_id.items()}
    paths = []
    for hemi in HEMIS:
        full = np.zeros(FSAVERAGE_VERTICES, dtype=np.int32)
        full[:FSAVERAGE5_VERTICES] = paint_parcels(hemi, ids_by_name)
        path = Path(layout.fsaverage_labels(hemi))
        with atomic_path(path, suffix=".mgz") as tmp:
            nib.save(nib.MGHImage(full.reshape(-1, 1, 1), np.eye(4)), tmp)
        paths.append(path)
    return paths[0], paths[1]


def roi_vertex_values(atlas: SurfaceAtlas, values: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex float arrays (lh, rh) on fsaverage5: the value of the vertex's parcel, NaN elsewhere.

    NaN where the vertex is unlabelled (0) or its parcel has no (or a NaN) value.
    A name that is not in the atlas's label table is an :class:`InputError`.
    """
    id_of = {name: i for i, name in atlas.names.items()}
    unknown = [n for n in values if n not in id_of]
    if unknown:
        raise InputError(f"parcel(s) {unknown} not in the HCP-MMP1 label table (e.g. {list(id_of)[:3]})")
    out = []
    for hemi in HEMIS:
        labels = atlas.labels(hemi)
        lut = np.full(max(int(labels.max(initial=0)), max(atlas.names, default=0)) + 1, np.nan)
        for name, v in values.items():
            lut[id_of[name]] = float(v)
        vert = np.full(labels.shape, np.nan)
        ok = labels > 0
        vert[ok] = lut[labels[ok]]
        out.append(vert)
    return out[0], out[1]


def _colour_limits(lh: np.ndarray, rh: np.ndarray, symmetric: bool) -> tuple[float, float]:
    both = np.concatenate([lh, rh])
    both = both[np.isfinite(both)]
    if both.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        m = float(np.abs(both).max()) or 1.0
        return -m, m
    lo, hi = float(both.min()), float(both.max())
    if lo == hi:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    return lo, hi


#: Pixels per mm of the figure's views: a lateral view (~216 mm front to back) is ~430 pixels wide, the
#: ~420 its panel has in the 150-dpi PNG.
FIGURE_SCALE = 2.0


def view_camera(hemi: str, view: str) -> tuple[tuple[int, float], tuple[int, float], tuple[int, float]]:
    """The orthographic camera of one panel as (axis, sign) pairs of the surface's coordinates: depth
    (smaller: nearer the camera), screen right, screen up. Lateral and medial views look along x with
    anterior at the left for the left hemisphere's lateral view; ventral views look up from below,
    anterior at the left, the lateral edge down."""
    s = 1.0 if hemi == "lh" else -1.0
    return {"lateral": ((0, s), (1, -s), (2, 1.0)),
            "medial": ((0, -s), (1, s), (2, 1.0)),
            "ventral": ((2, 1.0), (1, -1.0), (0, s))}[view]


def _vertex_shade(coords: np.ndarray, faces: np.ndarray, sulc: np.ndarray, axis: int) -> np.ndarray:
    """Grey level of each vertex: sulcal depth (gyri light, sulci darker) times a Lambert light from a
    camera looking along ``axis`` (per-vertex normals: area-weighted face normals)."""
    tri = coords[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(coords)
    for j in range(3):
        np.add.at(vn, faces[:, j], fn)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True).clip(1e-12)
    grey = 0.55 + 0.35 * (sulc.max() - sulc) / (np.ptp(sulc) or 1.0)
    return grey * (0.45 + 0.55 * np.abs(vn[:, axis]))


def view_vertices(hemi: str, view: str, scale: float = FIGURE_SCALE, pad: int = 3) -> np.ndarray:
    """(H, W) index of the inflated fsaverage5 vertex of ``hemi`` seen at each pixel of ``view`` (-1:
    none), ``scale`` pixels per mm, the mesh's bounding box plus ``pad`` pixels. The surface is closed
    and its triangles face outwards, so those facing away from the camera are hidden and left out."""
    coords, faces = _fsaverage5()[hemi]["inflated"]
    faces = np.asarray(faces, dtype=np.int64)
    (da, ds), (ha, hs), (va, vs) = view_camera(hemi, view)
    tri = coords[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, da]
    faces = faces[ds * normal <= 0]  # the camera is at -ds along axis da
    right, up = hs * coords[:, ha], vs * coords[:, va]
    shape = (int(np.ceil(np.ptp(up) * scale)) + 2 * pad, int(np.ceil(np.ptp(right) * scale)) + 2 * pad)
    xy = np.stack([(right - right.min()) * scale + pad, (up.max() - up) * scale + pad], axis=1)
    return _rasterise(xy, ds * coords[:, da], faces, shape)


def brain_map_panels(values: Mapping[str, float], atlas: SurfaceAtlas, cmap: str = "viridis",
                     symmetric: bool = False, scale: float = FIGURE_SCALE) -> tuple[list[dict], float, float]:
    """The figure's six views as images, and the colour limits: per (hemisphere, view) a dict with
    ``hemi``, ``view``, ``vertex`` (:func:`view_vertices`) and ``rgb`` (float, (H, W, 3)): each pixel
    its vertex's parcel value on the colour map, shaded; parcels without a value grey, background white."""
    from matplotlib import colormaps

    surf = _fsaverage5()
    maps = dict(zip(HEMIS, roi_vertex_values(atlas, values), strict=True))
    vmin, vmax = _colour_limits(maps["lh"], maps["rh"], symmetric)
    colours = colormaps[cmap]
    panels = []
    for hemi in HEMIS:
        coords, faces = surf[hemi]["inflated"]
        shades = {}  # per camera axis (lateral and medial views share x)
        for view in VIEWS:
            vertex = view_vertices(hemi, view, scale)
            seen = vertex >= 0
            axis = view_camera(hemi, view)[0][0]
            if axis not in shades:
                shades[axis] = _vertex_shade(coords, np.asarray(faces, dtype=np.int64), surf[hemi]["sulc"], axis)
            shade_v = shades[axis]
            shade = np.ones(vertex.shape)
            shade[seen] = shade_v[vertex[seen]]
            val = np.full(vertex.shape, np.nan)
            val[seen] = maps[hemi][vertex[seen]]
            rgb = colours(np.clip((np.nan_to_num(val) - vmin) / ((vmax - vmin) or 1.0), 0, 1))[..., :3]
            tone = (0.35 + 0.65 * shade)[..., None]  # the light on a coloured parcel
            img = np.where(np.isfinite(val)[..., None], rgb * tone, np.repeat(shade[..., None], 3, axis=2))
            img[~seen] = 1.0
            panels.append({"hemi": hemi, "view": view, "vertex": vertex, "rgb": img})
    return panels, vmin, vmax


def plot_brain_map(values: Mapping[str, float], atlas: SurfaceAtlas, png: Path, pdf: Path, title: str,
                   label: str, cmap: str = "viridis", symmetric: bool = False) -> None:
    """Per-parcel ``values`` on the inflated fsaverage5 surface: lateral, medial, ventral views of both hemispheres.

    Each view is an orthographic raster of the surface (:func:`brain_map_panels`: a z-buffer over its
    triangles, each pixel coloured by its nearest vertex's parcel), drawn once and placed in both files.
    Parcels without a value show the shaded surface in grey; one shared colour bar labelled ``label``
    (symmetric around 0 when ``symmetric``). Writes ``png`` (150 dpi) and ``pdf`` atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    panels, vmin, vmax = brain_map_panels(values, atlas, cmap, symmetric)
    fig = plt.figure(figsize=(9.0, 5.8))
    col_w, row_h, top = 1 / 3, 0.38, 0.92  # two rows of views; colour bar below them
    for k, panel in enumerate(panels):
        r, c = divmod(k, len(VIEWS))
        ax = fig.add_axes((c * col_w + 0.01, top - (r + 1) * row_h + 0.01, col_w - 0.02, row_h - 0.06))
        ax.imshow(panel["rgb"], interpolation="antialiased")
        ax.set_axis_off()
        side = "left" if panel["hemi"] == "lh" else "right"
        name = f"{side} {panel['view']}" + (" (anterior at left)" if panel["view"] == "ventral" else "")
        fig.text(c * col_w + col_w / 2, top - r * row_h - 0.01, name, ha="center", va="top", fontsize=9)
    fig.suptitle(title, y=0.985, fontsize=12)
    cax = fig.add_axes((0.3, 0.13, 0.4, 0.03))
    colours = plt.get_cmap(cmap)
    bar = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), colours), cax=cax, orientation="horizontal")
    bar.ax.xaxis.set_major_locator(MaxNLocator(nbins=5, symmetric=symmetric))  # labels never collide
    bar.ax.tick_params(labelsize=9)
    bar.set_label(label)
    try:
        for path, fmt in ((Path(png), "png"), (Path(pdf), "pdf")):
            with atomic_path(path, suffix=f".{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", pad_inches=0.1)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- raster views (results explorer)
#: The explorer's views: (hemisphere, view, the axis the camera looks along, the screen's horizontal axis).
#: Orthographic projections of the inflated surface: a lateral view of the left hemisphere looks along +x
#: with anterior (+y) at the left; medial views look at the other side.
RASTER_VIEWS = (("lh", "lateral", 1.0, -1.0), ("rh", "lateral", -1.0, 1.0),
                ("lh", "medial", -1.0, 1.0), ("rh", "medial", 1.0, -1.0))


@dataclass(frozen=True)
class ParcelRaster:
    """Four views (left and right, lateral and medial) of the inflated fsaverage5 surface as one image:
    the parcel id under each pixel (0: unlabelled cortex, -1: background) and its grey shade (sulcal
    depth times a Lambert light). Built once (:func:`parcel_raster`); painting a model's values on it
    (:func:`paint_raster`) is a table lookup."""

    parcel: np.ndarray  # (H, W) int64
    shade: np.ndarray  # (H, W) float64 in [0, 1]
    names: dict[int, str]


def _rasterise(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Index of the visible vertex under each pixel (-1: none) of triangles ``faces`` projected to pixel
    coordinates ``xy`` (nearer = smaller ``depth``): every (triangle, pixel of its bounding box) pair at
    once, the pixel's nearest triangle kept (a z-buffer by sorting)."""
    h, w = shape
    tri = xy[faces]  # (F, 3, 2)
    lo = np.floor(tri.min(axis=1)).astype(np.int64)
    hi = np.ceil(tri.max(axis=1)).astype(np.int64)
    lo, hi = np.clip(lo, 0, [w - 1, h - 1]), np.clip(hi, 0, [w - 1, h - 1])
    nx, ny = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    count = nx * ny
    f = np.repeat(np.arange(len(faces)), count)
    k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    px = lo[f, 0] + k % nx[f] + 0.5
    py = lo[f, 1] + k // nx[f] + 0.5
    a, b, c = tri[f, 0], tri[f, 1], tri[f, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    den = np.where(np.abs(den) < 1e-12, np.nan, den)
    w0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / den
    w1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / den
    w2 = 1 - w0 - w1
    inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
    f, px, py = f[inside], px[inside].astype(np.int64), py[inside].astype(np.int64)
    weights = np.stack([w0[inside], w1[inside], w2[inside]], axis=1)
    z = (weights * depth[faces[f]]).sum(axis=1)
    pixel = py * w + px
    order = np.lexsort((z, pixel))  # per pixel, nearest first
    pixel, first = np.unique(pixel[order], return_index=True)
    pick = order[first]
    out = np.full(h * w, -1, dtype=np.int64)
    out[pixel] = faces[f[pick], np.argmax(weights[pick], axis=1)]  # the triangle's nearest vertex
    return out.reshape(h, w)


def parcel_raster(atlas: SurfaceAtlas, width: int = 240) -> ParcelRaster:
    """The four views of :data:`RASTER_VIEWS` in a 2 x 2 grid, each ``width`` pixels wide."""
    surf = _fsaverage5()
    scale = width / 220.0  # the inflated hemispheres span ~216 mm front to back
    height = int(round(150.0 * scale))  # and ~146 mm top to bottom
    tiles_p, tiles_s = [], []
    for hemi, _view, look, horiz in RASTER_VIEWS:
        coords, faces = surf[hemi]["inflated"]
        faces = np.asarray(faces, dtype=np.int64)
        xy = np.stack([horiz * coords[:, 1] * scale + width / 2, -coords[:, 2] * scale + height / 2], axis=1)
        vertex = _rasterise(xy, look * coords[:, 0], faces, (height, width))
        shade_v = _vertex_shade(coords, faces, surf[hemi]["sulc"], 0)  # a light from the camera (along x)
        seen = vertex >= 0
        p = np.full(vertex.shape, -1, dtype=np.int64)
        p[seen] = atlas.labels(hemi)[vertex[seen]]
        s = np.ones(vertex.shape)
        s[seen] = shade_v[vertex[seen]]
        tiles_p.append(p)
        tiles_s.append(s)
    parcel = np.block([[tiles_p[0], tiles_p[1]], [tiles_p[2], tiles_p[3]]])
    shade = np.block([[tiles_s[0], tiles_s[1]], [tiles_s[2], tiles_s[3]]])
    return ParcelRaster(parcel=parcel, shade=shade, names=dict(atlas.names))


def paint_raster(raster: ParcelRaster, values: Mapping[str, float], vmin: float, vmax: float,
                 cmap: str = "viridis") -> np.ndarray:
    """RGB image (uint8) of per-parcel ``values`` on ``raster``: the colour map between ``vmin`` and
    ``vmax`` (clipped), shaded; parcels without a value grey, background white. Names not in the
    atlas are ignored (a table's parcel the atlas does not draw)."""
    from matplotlib import colormaps

    id_of = {name: i for i, name in raster.names.items()}
    lut = np.full(max(int(raster.parcel.max(initial=0)), max(raster.names, default=0)) + 1, np.nan)
    for name, v in values.items():
        if name in id_of and v is not None:
            lut[id_of[name]] = float(v)
    val = np.full(raster.parcel.shape, np.nan)
    on = raster.parcel > 0
    val[on] = lut[raster.parcel[on]]
    span = (vmax - vmin) or 1.0
    rgb = colormaps[cmap](np.clip((np.nan_to_num(val) - vmin) / span, 0, 1))[..., :3]
    grey = np.repeat(raster.shade[..., None], 3, axis=2)
    tone = 0.35 + 0.65 * raster.shade[..., None]  # the light on a coloured parcel
    img = np.where(np.isfinite(val)[..., None], rgb * tone, grey)
    img[raster.parcel < 0] = 1.0
    return (img * 255).round().astype(np.uint8)
