"""Ingest of the Natural Scenes Dataset (NSD), from its release layout on disk.

One code path reads the real NSD release and the generated mini-NSD: both are
laid out as NSD ships them. Ids follow NSD's conventions: ``73KID`` is the
1-based index into the 73,000 stimuli (``nsdId + 1``), sessions are 1-based.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.io import InputError, Progress, atomic_path, h5_loader, require_file

log = logging.getLogger("brainalign")

SPLITS = ("paper", "shared1000", "all")
FIX_ROOT = "set nsd_root to a directory in the NSD release layout"
#: Where the nsd_access package (and this project) expects COCO's caption files, under the NSD root.
COCO_DIR = "nsddata_stimuli/stimuli/nsd/annotations"
FIX_COCO = ("COCO captions are not part of the NSD release: download annotations_trainval2017.zip from "
            "https://cocodataset.org/#download and unpack captions_train2017.json and captions_val2017.json "
            "there, or set config key 'coco_annotations' to their folder")


@dataclass(frozen=True)
class NSDLayout:
    """Where NSD keeps each file, relative to the release root ``root``; COCO's caption files are
    under ``coco_annotations`` (default: the nsd_access location ``{root}/nsddata_stimuli/stimuli/nsd/annotations``)."""

    root: Path
    coco_annotations: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        coco = self.coco_annotations
        object.__setattr__(self, "coco_annotations", self.root / COCO_DIR if coco is None else Path(coco))

    @property
    def expdesign(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"

    @property
    def stimuli(self) -> Path:
        return self.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"

    def captions(self, coco_split: str) -> Path:
        return self.coco_annotations / f"captions_{coco_split}.json"

    @property
    def parcel_table(self) -> Path:
        return self.root / "nsddata/freesurfer/fsaverage/label/HCP_MMP1.mgz.ctab"

    def fsaverage_labels(self, hemi: str) -> Path:
        """HCP-MMP1 on fsaverage (163842 values; 0 unlabelled, else the ctab index), hemi 'lh' or 'rh'."""
        return self.root / f"nsddata/freesurfer/fsaverage/label/{hemi}.HCP_MMP1.mgz"

    def responses(self, subject: str) -> Path:
        return self.root / f"nsddata/ppdata/{subject}/behav/responses.tsv"

    def parcel_volume(self, subject: str) -> Path:
        return self.root / f"nsddata/ppdata/{subject}/func1pt8mm/roi/HCP_MMP1.nii.gz"

    def betas_dir(self, subject: str) -> Path:
        return self.root / f"nsddata_betas/ppdata/{subject}/func1pt8mm/betas_fithrf_GLMdenoise_RR"

    def betas(self, subject: str, session: int, ext: str = "nii.gz") -> Path:
        return self.betas_dir(subject) / f"betas_session{session:02d}.{ext}"

    def ncsnr(self, subject: str) -> Path:
        """NSD's noise-ceiling SNR per voxel (NaN: invalid voxel), beside the betas."""
        return self.betas_dir(subject) / "ncsnr.nii.gz"

    def subject_inputs(self, subject: str, label_table: bool = True) -> list[Path]:
        """The fixed files one subject's ingest needs (betas are found per session); the label
        table only with ``label_table`` (without it ingest uses the package's copy)."""
        files = [self.expdesign, self.stim_info, self.responses(subject), self.parcel_volume(subject)]
        return files + [self.parcel_table] if label_table else files

    def stimulus_inputs(self, subject: str) -> list[Path]:
        """The files that define one subject's stimuli and captions."""
        return [
            self.expdesign,
            self.stim_info,
            self.responses(subject),
            self.captions("train2017"),
            self.captions("val2017"),
        ]


def _require(path: Path, what: str) -> Path:
    return require_file(path, what, FIX_ROOT)


def read_expdesign(path: Path) -> dict[str, np.ndarray]:
    """``masterordering``, ``subjectim`` and ``sharedix`` of nsd_expdesign.mat, 1-based ints."""
    from scipy.io import loadmat

    mat = loadmat(_require(path, "NSD experiment design"))
    out = {}
    for key in ("masterordering", "subjectim", "sharedix"):
        if key not in mat:
            raise InputError(f"{path}: variable {key!r} missing (not an NSD nsd_expdesign.mat)")
        out[key] = np.asarray(mat[key]).astype(np.int64)
    out["masterordering"] = out["masterordering"].ravel()
    out["sharedix"] = out["sharedix"].ravel()
    return out


def read_responses(path: Path) -> pd.DataFrame:
    """Trials of one subject in acquisition order: ``SESSION``, ``RUN``, ``TRIAL``, ``73KID``."""
    df = pd.read_csv(_require(path, "NSD behavioural responses"), sep="\t")
    missing = {"SESSION", "73KID"} - set(df.columns)
    if missing:
        raise InputError(f"{path}: columns {sorted(missing)} missing (not an NSD responses.tsv)")
    kid = pd.to_numeric(df["73KID"], errors="coerce")
    bad = df["73KID"][kid.isna() | (kid < 1) | (kid > 73000)]
    if len(bad):
        raise InputError(f"{path}: 73KID {bad.iloc[0]!s} (row {bad.index[0] + 2}) is outside 1..73000 "
                         "(73KIDs are 1-based NSD image numbers): fix or download responses.tsv again")
    return df


def read_parcel_table(path: Path) -> pd.DataFrame:
    """HCP-MMP1 label table (``index name`` per line) as columns ``index``, ``name``.

    Names are normalised to the bare parcel name (``L_V1_ROI`` -> ``V1``).
    """
    rows = []
    for line in _require(path, "HCP-MMP1 label table").read_text().splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
            continue
        name = re.sub(r"^[LR]_|_ROI$", "", parts[1])
        rows.append((int(parts[0]), name))
    table = pd.DataFrame(rows, columns=["index", "name"])
    return table[table["index"] > 0].reset_index(drop=True)


def parcel_table(layout: NSDLayout) -> pd.DataFrame:
    """NSD's HCP-MMP1 label table, or, when the release has no FreeSurfer folder, the same 180
    parcels shipped with the package (``brainalign/resources/hcp_mmp1.csv``, NSD's ids and names)."""
    if layout.parcel_table.is_file():
        return read_parcel_table(layout.parcel_table)
    from brainalign.resources import hcp_parcels

    log.warning("%s not found (no FreeSurfer folder): HCP-MMP1 names from the package's table", layout.parcel_table)
    return hcp_parcels()[["index", "name"]].copy()


def resolve_rois(requested: str | list[str], table: pd.DataFrame) -> list[str]:
    """Parcel names to use: ``'all'`` means every parcel of the label table, in atlas order."""
    names = table["name"].tolist()
    if requested == "all":
        return names
    unknown = [r for r in requested if r not in names]
    if unknown:
        raise InputError(
            f"config key 'rois': unknown HCP-MMP1 parcel(s) {unknown}; use names from "
            f"HCP_MMP1.mgz.ctab (e.g. {names[:3]}) or 'all'"
        )
    return list(requested)


def subject_number(subject: str) -> int:
    m = re.fullmatch(r"subj0?(\d)", subject)
    if not m:
        raise InputError(f"config key 'subjects': {subject!r} is not an NSD subject (subj01..subj08)")
    return int(m.group(1))


def select_stimuli(trials: pd.DataFrame, sharedix: np.ndarray, split: str) -> np.ndarray:
    """The 73KIDs one subject contributes, in order of first occurrence.

    ``paper``: the subject's images minus the 1,000 shown to every subject (the
    reference's choice); ``shared1000``: only those; ``all``: every image.
    """
    if split not in SPLITS:
        raise InputError(f"config key 'split': {split!r} is not one of {list(SPLITS)}")
    order = pd.unique(trials["73KID"].to_numpy())
    shared = np.isin(order, sharedix)
    if split == "paper":
        return order[~shared]
    if split == "shared1000":
        return order[shared]
    return order


def wanted_sessions(listed: list[int], sessions=None) -> list[int]:
    """The sessions of ``listed`` that config key ``sessions`` selects: ``None`` or ``'all'``, a list
    of session numbers, or ``{'max': N}`` (sessions 1..N: the paper used 1-37)."""
    if sessions is None or sessions == "all":
        return listed
    if isinstance(sessions, dict):
        top = sessions.get("max")
        if set(sessions) != {"max"} or not isinstance(top, int) or top < 1:
            raise InputError(f"config key 'sessions': {sessions!r}; use all, a list of session numbers, or {{max: 37}}")
        return [s for s in listed if s <= top]
    if not isinstance(sessions, (list, tuple)) or not all(isinstance(s, int) and s >= 1 for s in sessions):
        raise InputError(f"config key 'sessions': {sessions!r}; use all, a list of session numbers, or {{max: 37}}")
    return [s for s in listed if s in set(sessions)]


def present_sessions(layout: NSDLayout, subject: str, trials: pd.DataFrame, sessions=None) -> list[int]:
    """Sessions listed by responses.tsv, selected by ``sessions`` (see :func:`wanted_sessions`),
    whose betas file is on disk."""
    listed = sorted(int(s) for s in trials["SESSION"].unique())
    wanted = wanted_sessions(listed, sessions)
    if not wanted:
        raise InputError(f"config key 'sessions': {sessions!r} selects none of {subject}'s sessions "
                         f"{listed[0]}..{listed[-1]} in {layout.responses(subject)}")
    present = [
        s for s in wanted
        if layout.betas(subject, s).is_file() or layout.betas(subject, s, "hdf5").is_file()
    ]
    if not present:
        raise InputError(
            f"no betas found for {subject}: expected e.g. {layout.betas(subject, wanted[0])} "
            f"(download NSD's betas_fithrf_GLMdenoise_RR sessions, .nii.gz or .hdf5)"
        )
    return present


def read_session_betas(layout: NSDLayout, subject: str, session: int, voxels: np.ndarray) -> np.ndarray:
    """Betas of one session at the given voxels, shape (trials, n_voxels), percent signal change.

    ``voxels`` are flat indices into the (X, Y, Z) volume (C order). Reads the
    ``.nii.gz`` file, or NSD's ``.hdf5`` copy (dataset ``betas``, shape (trials, Z, Y, X)).
    """
    nii = layout.betas(subject, session)
    if nii.is_file():
        import nibabel as nib

        try:
            data = np.asanyarray(nib.load(nii).dataobj)  # (X, Y, Z, trials) int16
        except Exception as exc:  # noqa: BLE001 - gzip, nibabel and zlib raise several types
            raise InputError(f"{nii}: unreadable ({type(exc).__name__}: {exc}); download this session again") from None
        flat = data.reshape(-1, data.shape[-1])
        out = flat[voxels].T
    else:
        out = _read_hdf5_voxels(layout.betas(subject, session, "hdf5"), voxels)
    out = out.astype(np.float32)  # one float32 copy of the session, divided in place
    out /= 300.0
    return out


def _read_hdf5_voxels(path: Path, voxels: np.ndarray) -> np.ndarray:
    """NSD's ``.hdf5`` betas (dataset ``betas``, (trials, Z, Y, X), stored in per-voxel chunks) at
    ``voxels`` (flat (X, Y, Z) indices), shape (trials, n_voxels): only the bounding box of the
    voxels is read, a z-slab at a time, so a few parcels touch few chunks."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: unreadable HDF5 ({exc}); download this session again") from None
    with f:
        if "betas" not in f or f["betas"].ndim != 4:
            raise InputError(f"{path}: needs a dataset 'betas' of shape (trials, Z, Y, X) (NSD's betas_sessionNN.hdf5)")
        dset = f["betas"]
        n_trials, nz, ny, nx = dset.shape
        if voxels.size and voxels.max() >= nx * ny * nz:
            raise InputError(f"{path}: betas volume {(nx, ny, nz)} is smaller than the subject's HCP_MMP1.nii.gz")
        x, y, z = np.unravel_index(voxels, (nx, ny, nz))
        out = np.empty((n_trials, voxels.size), dtype=dset.dtype)
        y0, y1, x0, x1 = y.min(), y.max() + 1, x.min(), x.max() + 1
        for zz in np.unique(z):
            sel = np.flatnonzero(z == zz)
            slab = dset[:, int(zz), y0:y1, x0:x1]  # (trials, dy, dx)
            out[:, sel] = slab[:, y[sel] - y0, x[sel] - x0]
    return out


def parcel_voxels(volume: np.ndarray, table: pd.DataFrame, rois: list[str]) -> dict[str, np.ndarray]:
    """Flat voxel indices of each parcel, both hemispheres merged (same label id)."""
    flat = volume.reshape(-1)
    index = dict(zip(table["name"], table["index"], strict=True))
    out = {}
    for roi in rois:
        vox = np.flatnonzero(flat == index[roi])
        if vox.size == 0:
            raise InputError(f"parcel {roi!r} has no voxels in the subject's HCP_MMP1.nii.gz")
        out[roi] = vox
    return out


def subject_parcels(layout: NSDLayout, subject: str, rois: str | list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The subject's HCP-MMP1 label volume (int64) and the flat voxel indices of each requested
    parcel (``all``: every parcel the volume labels)."""
    import nibabel as nib

    table = parcel_table(layout)
    roi_names = resolve_rois(rois, table)
    volume = np.asanyarray(nib.load(_require(layout.parcel_volume(subject), "HCP-MMP1 volume")).dataobj)
    volume = np.round(volume).astype(np.int64)
    if rois == "all":  # every parcel the subject's volume labels
        present = set(np.unique(volume).tolist())
        roi_names = [n for n, i in zip(table["name"], table["index"], strict=True) if i in present]
    return volume, parcel_voxels(volume, table, roi_names)


@dataclass
class BrainResponses:
    """One subject's ingested responses (:func:`read_roi_responses`).

    ``stim_ids``: 73KIDs; ``rois``: per parcel the (n_stimuli, n_voxels) mean over each image's
    trials; ``repeats``: the trials averaged per image; with ``halves``, ``half_a`` holds per parcel
    the mean of each image's odd-numbered trials (1st, 3rd, ...) and ``repeats_a`` their count, so
    the even-numbered half is ``(repeats * mean - repeats_a * half_a) / (repeats - repeats_a)``;
    ``ncsnr``: per parcel each voxel's noise-ceiling SNR (NSD's ``ncsnr.nii.gz``), None without it."""

    stim_ids: np.ndarray
    rois: dict[str, np.ndarray]
    repeats: np.ndarray
    half_a: dict[str, np.ndarray] | None = None
    repeats_a: np.ndarray | None = None
    ncsnr: dict[str, np.ndarray] | None = None  # per parcel, each voxel's ncsnr (where the release has it)


def load_roi_responses(
    layout: NSDLayout,
    subject: str,
    rois: str | list[str],
    split: str,
    zscore_sessions: bool = False,
    sessions=None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-image ROI responses of one subject, averaged over repeats.

    Returns ``(stimulus_ids, {roi: array of shape (n_stimuli, n_voxels)})`` with
    stimulus ids (73KID) in order of first occurrence among the trials of the
    sessions present on disk. ``zscore_sessions`` z-scores each voxel within each
    session first (NSD's advice; the reference does not). ``sessions`` selects sessions
    (:func:`wanted_sessions`; the paper used 1-37).

    Peak memory ~ 4 bytes x n_stimuli x n_roi_voxels (running sums) plus one session.
    """
    got = read_roi_responses(layout, subject, rois, split, zscore_sessions, sessions)
    return got.stim_ids, got.rois


def read_roi_responses(
    layout: NSDLayout,
    subject: str,
    rois: str | list[str],
    split: str,
    zscore_sessions: bool = False,
    sessions=None,
    halves: bool = False,
) -> BrainResponses:
    """As :func:`load_roi_responses`, with the repeat counts and, with ``halves``, the mean of
    each image's odd-numbered trials (trials in session order), for split-half ceilings
    (:mod:`brainalign.alignment.ceiling`). ``halves`` doubles the running sums: peak memory ~ 8 bytes x
    n_stimuli x n_roi_voxels plus one session."""
    exp = read_expdesign(layout.expdesign)
    trials = read_responses(layout.responses(subject))
    volume, voxels_by_roi = subject_parcels(layout, subject, rois)
    all_voxels = np.concatenate(list(voxels_by_roi.values()))

    sessions = present_sessions(layout, subject, trials, sessions)
    trials = trials[trials["SESSION"].isin(sessions)]
    stim_ids = select_stimuli(trials, exp["sharedix"], split)
    if stim_ids.size == 0:
        raise InputError(f"{subject}: split {split!r} selects no stimuli from the sessions on disk")
    row_of = {int(s): i for i, s in enumerate(stim_ids)}

    # running sums (betas are int16 / 300), plus one spare row that takes the trials of images
    # outside the split, so a session is added without copying its kept trials
    sums = np.zeros((stim_ids.size + 1, all_voxels.size), dtype=np.float32)
    counts = np.zeros(stim_ids.size + 1, dtype=np.int64)
    half_sums = np.zeros_like(sums) if halves else None
    counts_a = np.zeros_like(counts)
    progress = Progress(len(sessions), f"ingest {subject}", "sessions")
    for session in sessions:
        sess_trials = trials[trials["SESSION"] == session]
        betas = None  # the last session's betas go before the next one is read
        betas = read_session_betas(layout, subject, session, all_voxels)
        if betas.shape[0] != len(sess_trials):
            raise InputError(
                f"{layout.betas(subject, session)}: {betas.shape[0]} trials, but responses.tsv "
                f"lists {len(sess_trials)} for session {session}"
            )
        bad = ~np.isfinite(betas).all(0)
        if bad.any():
            roi = roi_of_column(voxels_by_roi, int(np.flatnonzero(bad)[0]))
            raise InputError(
                f"{layout.betas(subject, session)}: NaN or inf betas at {int(bad.sum())} voxels (first in parcel "
                f"{roi!r}); NSD's betas are finite int16: download this session again"
            )
        if zscore_sessions:
            betas = (betas - betas.mean(0)) / (betas.std(0) + 1e-8)
        rows = np.array([row_of.get(int(k), stim_ids.size) for k in sess_trials["73KID"]], dtype=np.int64)
        if halves:  # a trial's position among its image's trials so far: even positions are half A
            position = counts[rows] + pd.Series(rows).groupby(rows).cumcount().to_numpy()
            rows_a = np.where(position % 2 == 0, rows, stim_ids.size)
            np.add.at(half_sums, rows_a, betas)
            np.add.at(counts_a, rows_a, 1)
        np.add.at(sums, rows, betas)
        np.add.at(counts, rows, 1)
        progress.step()
    del betas
    means = sums[:-1]  # a view: the spare row dropped
    means /= counts[:-1, None]
    if halves:
        half_means = half_sums[:-1]
        half_means /= counts_a[:-1, None]

    out, half, start = {}, {}, 0
    for roi, vox in voxels_by_roi.items():
        out[roi] = means[:, start : start + vox.size]
        if halves:
            half[roi] = half_means[:, start : start + vox.size]
        start += vox.size
        if not out[roi].any():
            raise InputError(
                f"{layout.parcel_volume(subject)}: parcel {roi!r} ({vox.size} voxels) has zero betas in every "
                f"session: the label volume is not in the betas' space (use this subject's func1pt8mm HCP_MMP1.nii.gz)"
            )
    ncsnr = None
    if layout.ncsnr(subject).exists():
        flat = read_ncsnr(layout.ncsnr(subject), volume.shape).reshape(-1)
        ncsnr = {roi: flat[vox].astype(np.float32) for roi, vox in voxels_by_roi.items()}
    return BrainResponses(stim_ids, out, counts[:-1].copy(), half if halves else None,
                          counts_a[:-1].copy() if halves else None, ncsnr)


def roi_of_column(voxels_by_roi: dict[str, np.ndarray], column: int) -> str:
    """The parcel of one column of the concatenated voxels of ``voxels_by_roi``."""
    ends = np.cumsum([v.size for v in voxels_by_roi.values()])
    return list(voxels_by_roi)[int(np.searchsorted(ends, column, side="right"))]


def read_captions(layout: NSDLayout, stim_ids: np.ndarray) -> pd.DataFrame:
    """COCO id and FIRST caption (file order, as the reference) of each stimulus."""
    info = pd.read_csv(_require(layout.stim_info, "NSD stimulus info"))
    info = info.set_index(info["nsdId"] + 1)
    missing = [int(s) for s in stim_ids if s not in info.index]
    if missing:
        raise InputError(f"{layout.stim_info}: no row for 73KIDs {missing[:5]}")
    rows = info.loc[stim_ids, ["cocoId", "cocoSplit"]]
    first: dict[int, str] = {}
    for split in sorted(rows["cocoSplit"].unique()):
        anns = json.loads(require_file(layout.captions(split), "COCO captions", FIX_COCO).read_text())
        for ann in anns["annotations"]:
            first.setdefault(int(ann["image_id"]), ann["caption"].strip())
    captions = [first.get(int(c)) for c in rows["cocoId"]]
    lacking = [int(s) for s, c in zip(stim_ids, captions, strict=True) if c is None]
    if lacking:
        raise InputError(f"no COCO caption for 73KIDs {lacking[:5]} in {layout.captions('*')}")
    return pd.DataFrame(
        {"nsd_id": stim_ids.astype(np.int64), "coco_id": rows["cocoId"].to_numpy(), "caption": captions}
    )


def subject_stimulus_ids(layout: NSDLayout, subject: str, split: str, sessions=None) -> np.ndarray:
    """One subject's 73KIDs for ``split`` (order of first occurrence), from the sessions listed in
    responses.tsv (selected by ``sessions``) whose betas are on disk, so that they match what
    :func:`load_roi_responses` returns."""
    exp = read_expdesign(layout.expdesign)
    trials = read_responses(layout.responses(subject))
    trials = trials[trials["SESSION"].isin(present_sessions(layout, subject, trials, sessions))]
    return select_stimuli(trials, exp["sharedix"], split)


def stimulus_count(layout: NSDLayout, subject: str, split: str, sessions=None) -> int:
    """How many stimuli :func:`subject_stimuli` gives (without reading captions)."""
    return len(subject_stimulus_ids(layout, subject, split, sessions))


def subject_stimuli(layout: NSDLayout, subject: str, split: str, sessions=None) -> pd.DataFrame:
    """One subject's stimuli for ``split`` (:func:`subject_stimulus_ids`) with captions."""
    return read_captions(layout, subject_stimulus_ids(layout, subject, split, sessions))


#: the brain file's layout: 2 adds each voxel's ncsnr (``ncsnr/<roi>``); the ingest rule carries it as a
#: parameter, so a change reruns ingest (and what reads it) on existing results
BRAIN_FORMAT = 2


def write_brain(path: Path, subject: str, split: str, stim_ids: np.ndarray, rois: dict[str, np.ndarray],
                responses: BrainResponses | None = None) -> None:
    """Write one subject's ROI responses: ``stimulus_ids`` and ``roi/<name>`` (n x v float32); from
    ``responses`` also ``repeats`` and, where it has halves, ``repeats_a`` and ``half_a/<name>``, and
    where it has them, each voxel's ncsnr (``ncsnr/<name>``, v float32)."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["subject"] = subject
        f.attrs["split"] = split
        f.attrs["format"] = BRAIN_FORMAT
        f.attrs["rois"] = json.dumps(list(rois))
        f["stimulus_ids"] = stim_ids.astype(np.int64)
        for name, arr in rois.items():
            f[f"roi/{name}"] = arr
        if responses is not None:
            f["repeats"] = responses.repeats.astype(np.int64)
            if responses.half_a is not None:
                f["repeats_a"] = responses.repeats_a.astype(np.int64)
                for name, arr in responses.half_a.items():
                    f[f"half_a/{name}"] = arr
            if responses.ncsnr is not None:
                for name, arr in responses.ncsnr.items():
                    f[f"ncsnr/{name}"] = arr


def read_brain(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Inverse of :func:`write_brain`: ``(stimulus_ids, {roi: (n, v) array})`` in ROI order."""
    ids, loaders = brain_loaders(path)
    return ids, {n: load() for n, load in loaders.items()}


def brain_loaders(path: Path) -> tuple[np.ndarray, dict]:
    """Like :func:`read_brain`, with one zero-argument loader per ROI instead of the arrays."""
    import h5py

    with h5py.File(path, "r") as f:
        names = json.loads(f.attrs["rois"])
        ids = f["stimulus_ids"][()]
    return ids, {n: h5_loader(path, f"roi/{n}") for n in names}


def brain_voxel_ceilings(path: Path) -> list[np.ndarray] | None:
    """Each voxel's noise ceiling as a fraction (NSD's formula, :func:`noise_ceiling`, for the
    trials the brain file averaged), one array per ROI in ROI order; None where ingest found no ncsnr."""
    import h5py

    with h5py.File(path, "r") as f:
        names = json.loads(f.attrs["rois"])
        if "ncsnr" not in f or "repeats" not in f:
            return None
        repeats = f["repeats"][()]
        return [noise_ceiling(f[f"ncsnr/{n}"][()].astype(np.float64), repeats) / 100.0 for n in names]


def read_ncsnr(path: Path, shape: tuple) -> np.ndarray:
    """NSD's ``ncsnr.nii.gz`` (float64), checked against the label volume's shape."""
    import nibabel as nib

    ncsnr = np.asanyarray(nib.load(path).dataobj).astype(np.float64)
    if ncsnr.shape[:3] != tuple(shape)[:3]:
        raise InputError(f"{path}: shape {ncsnr.shape} differs from the subject's HCP_MMP1.nii.gz {tuple(shape)}")
    return ncsnr


def noise_ceiling(ncsnr: np.ndarray, repeats: np.ndarray) -> np.ndarray:
    """NSD's noise ceiling (percent of variance explainable) of responses averaged over each
    image's trials: ``100 ncsnr^2 / (ncsnr^2 + (A/3 + B/2 + C/1) / (A + B + C))`` with A, B, C
    the numbers of images with 3, 2 and 1 trials (Allen et al. 2022). ``repeats``: the trial count
    of each averaged image (any count k counts as 1/k). NaN where ncsnr is NaN."""
    repeats = np.asarray(repeats, dtype=float)
    if repeats.size == 0 or (repeats < 1).any():
        raise ValueError("every averaged image needs at least one trial")
    noise = float(np.mean(1.0 / repeats))  # (A/3 + B/2 + C/1) / (A + B + C)
    snr2 = np.asarray(ncsnr, dtype=float) ** 2
    return 100.0 * snr2 / (snr2 + noise)


def parcel_noise_ceilings(layout: NSDLayout, subject: str, rois, split: str, sessions=None) -> pd.DataFrame:
    """Per parcel, NSD's noise ceiling for the repeats this split averages in the sessions used:
    ``roi, n_voxels, n_valid`` (voxels with a finite ncsnr), ``ncsnr`` (mean over valid voxels),
    ``noise_ceiling`` (percent; mean of the voxels' ceilings), and the image counts ``A, B, C``."""
    path = _require(layout.ncsnr(subject), "noise-ceiling SNR (ncsnr)")
    exp = read_expdesign(layout.expdesign)
    trials = read_responses(layout.responses(subject))
    volume, voxels_by_roi = subject_parcels(layout, subject, rois)
    ncsnr = read_ncsnr(path, volume.shape)
    used = present_sessions(layout, subject, trials, sessions)
    trials = trials[trials["SESSION"].isin(used)]
    stim_ids = select_stimuli(trials, exp["sharedix"], split)
    repeats = trials["73KID"].value_counts().reindex(stim_ids).to_numpy()
    flat = ncsnr.reshape(-1)
    rows = []
    for roi, vox in voxels_by_roi.items():
        values = flat[vox]
        valid = np.isfinite(values)
        nc = noise_ceiling(values[valid], repeats) if valid.any() else np.array([np.nan])
        rows.append({"roi": roi, "n_voxels": vox.size, "n_valid": int(valid.sum()),
                     "ncsnr": float(values[valid].mean()) if valid.any() else np.nan,
                     "noise_ceiling": float(np.mean(nc)) if valid.any() else np.nan,
                     "A": int((repeats == 3).sum()), "B": int((repeats == 2).sum()), "C": int((repeats == 1).sum())})
    return pd.DataFrame(rows)
