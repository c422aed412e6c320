"""Generate a small NSD release (the mini-NSD) with a planted ground truth.

The files are written in the real NSD layout and formats (see
:class:`brainalign.data.nsd.NSDLayout`), so the same ingest code reads them and the
real release. Images are crops, flips and rescalings of the natural photos
that scikit-image, scikit-learn and matplotlib ship; each has COCO-style
captions that describe it.

Planted ground truth: each planted parcel's voxels are a noisy linear read-out
of one known representation, whose depth rises from posterior to anterior
parcels: early visual parcels read early blocks of a pretrained vision model,
late parcels read late blocks or hidden states of a language model on the
captions. Every trial adds independent noise, so repeats differ. The planted
map is written to ``ground_truth.json`` at the release root.

Planted cross-modal truth: every image is a view (crop, zoom, flip) of one of 18 photos, and
every caption of it describes that photo, so the images and the captions share a known latent
(``ground_truth.json``'s ``stimuli``: photo and view per image). Models that recognise the
photos align with each other across modalities; untrained copies do not (the convergence
part's test).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.data.nsd import NSDLayout, subject_number
from brainalign.io import atomic_path, write_text
from brainalign.resources import hcp_parcels

# (photo loader, what it shows)
PHOTOS: list[tuple[str, str]] = [
    ("skimage:astronaut", "an astronaut in a white spacesuit standing in front of a flag"),
    ("skimage:camera", "a man looking through a camera on a tripod in a field"),
    ("skimage:chelsea", "an orange tabby cat looking to the side"),
    ("skimage:coffee", "a cup of coffee on a saucer next to a spoon"),
    ("skimage:coins", "a collection of old coins lying on a flat surface"),
    ("skimage:hubble_deep_field", "a deep space photo full of distant galaxies"),
    ("skimage:immunohistochemistry", "a microscope photo of stained tissue cells"),
    ("skimage:moon", "the cratered surface of the moon"),
    ("skimage:rocket", "a rocket standing on a launch pad under a blue sky"),
    ("skimage:clock", "a clock hanging on a wall"),
    ("skimage:brick", "a wall made of grey bricks"),
    ("skimage:grass", "a patch of green grass seen from above"),
    ("skimage:gravel", "a path covered with small stones of gravel"),
    ("skimage:retina", "a medical photo of the back of a human eye"),
    ("sklearn:china.jpg", "a chinese temple behind green trees"),
    ("sklearn:flower.jpg", "a pink flower with a yellow centre"),
    ("matplotlib:grace_hopper.jpg", "a portrait of a woman in a navy uniform"),
    ("skimage:page", "a scanned page of printed text"),
]
VIEWS = [
    ("a photo of {}", 1.0, False),
    ("a close-up photo of {}", 0.35, False),
    ("a cropped photo showing part of {}", 0.55, False),
    ("a mirrored photo of {}", 0.8, True),
    ("a zoomed-in mirrored photo of {}", 0.4, True),
]
SUBJECTS = ("subj01", "subj02", "subj05", "subj07")
# Parcels from posterior to anterior, and what each reads out: (modality, layer index).
PLANTED: dict[str, tuple[str, int] | None] = {
    "V1": ("vision", 1),
    "V2": ("vision", 2),
    "V3": ("vision", 3),
    "V4": ("vision", 4),
    "LO1": ("vision", 5),
    "PIT": ("vision", 5),
    "FFC": ("vision", 6),
    "TE2a": ("vision", 6),
    "TGv": ("language", 4),
    "55b": ("language", 5),
    "OFC": ("language", 6),
    "4": None,  # control: noise only
}


@dataclass
class MiniNSDSpec:
    """Size and noise of the generated release."""

    seed: int = 0
    subjects: tuple[str, ...] = SUBJECTS
    n_shared: int = 60
    n_unique: int = 420
    repeats: int = 3
    trials_per_session: int = 240
    image_size: int = 128
    voxels_per_parcel: tuple[int, int] = (40, 70)
    noise: float = 1.0
    planted: dict = field(default_factory=lambda: dict(PLANTED))


def load_photo(spec: str) -> np.ndarray:
    """One bundled natural photo as uint8 (H, W, 3)."""
    lib, name = spec.split(":", 1)
    if lib == "skimage":
        import skimage.data

        img = getattr(skimage.data, name)()
    elif lib == "sklearn":
        from sklearn.datasets import load_sample_image

        img = load_sample_image(name)
    else:
        from matplotlib import cbook
        from PIL import Image

        img = np.asarray(Image.open(cbook.get_sample_data(name, asfileobj=False)))
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) / max(img.max(), 1))).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3]


def stimulus_latent(n: int) -> dict:
    """What the images and their captions share, per 73KID (1-based) in order: the photo each image is a
    view of (an index into :data:`PHOTOS`, which every caption of the image describes) and the view (an
    index into :data:`VIEWS`, which its first caption names). Vision models see the photo, language models
    read it: the cross-modal truth the convergence part recovers (models that recognise the photos align)."""
    i = np.arange(n)
    return {"photo": (i % len(PHOTOS)).tolist(), "view": ((i // len(PHOTOS)) % len(VIEWS)).tolist(),
            "photos": [what for _, what in PHOTOS]}


def make_images(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[list[str]]]:
    """``n`` distinct images (n, size, size, 3) and 5 captions each."""
    from PIL import Image

    photos = [load_photo(p) for p, _ in PHOTOS]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions = []
    for i in range(n):
        p = i % len(PHOTOS)
        view = VIEWS[(i // len(PHOTOS)) % len(VIEWS)]
        photo = photos[p]
        h, w = photo.shape[:2]
        frac = view[1] * rng.uniform(0.85, 1.0)
        side = int(min(h, w) * frac)
        y0 = rng.integers(0, h - side + 1)
        x0 = rng.integers(0, w - side + 1)
        crop = photo[y0 : y0 + side, x0 : x0 + side]
        if view[2]:
            crop = crop[:, ::-1]
        images[i] = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BICUBIC))
        what = PHOTOS[p][1]
        caps = [view[0].format(what)]
        caps += [t.format(what) for t in rng.permutation([
            "an image of {}", "{}", "there is {} in this picture", "a picture of {}", "this shows {}"])[:4]]
        captions.append([c[0].upper() + c[1:] for c in caps])
    return images, captions


def make_parcel_volume(spec: MiniNSDSpec, rng: np.random.Generator, shape=(20, 20, 20)) -> np.ndarray:
    """HCP-MMP1-style label volume: -1 outside the brain, 0 unlabelled, parcel ids in both hemispheres."""
    table = hcp_parcels().set_index("name")
    vol = -np.ones(shape, dtype=np.int16)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    centre = (np.array(shape) - 1) / 2
    inside = (((grid - centre) / (np.array(shape) / 2)) ** 2).sum(-1) <= 1.0
    vol[inside] = 0
    free = np.flatnonzero(inside.reshape(-1))
    names = list(spec.planted)
    # posterior (low y) to anterior (high y): order candidate voxels by y, then deal slabs out
    ys = grid.reshape(-1, 3)[free, 1]
    free = free[np.argsort(ys, kind="stable")]
    slab = len(free) // len(names)
    flat = vol.reshape(-1)
    for i, name in enumerate(names):
        pool = free[i * slab : (i + 1) * slab]
        n_vox = int(rng.integers(*spec.voxels_per_parcel))
        chosen = rng.choice(pool, size=min(n_vox, len(pool)), replace=False)
        flat[chosen] = table.loc[name, "index"]  # both hemispheres share the id
    return vol


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-8)


def stimulus_files(root: Path, spec: MiniNSDSpec | None = None) -> list[Path]:
    """The files of the first stage (:func:`write_stimulus_release`)."""
    spec = spec or MiniNSDSpec()
    layout = NSDLayout(Path(root))
    files = [layout.expdesign, layout.stim_info, layout.stimuli, layout.parcel_table, layout.captions("train2017"),
             layout.captions("val2017"), layout.fsaverage_labels("lh"), layout.fsaverage_labels("rh")]
    return files + [layout.responses(s) for s in spec.subjects]


def brain_files(root: Path, spec: MiniNSDSpec | None = None) -> list[Path]:
    """The files of the second stage (:func:`write_brain_release`) but ``ground_truth.json``."""
    spec = spec or MiniNSDSpec()
    layout = NSDLayout(Path(root))
    n_sessions = int(np.ceil((spec.n_shared + spec.n_unique) * spec.repeats / spec.trials_per_session))
    files = []
    for s in spec.subjects:
        files += [layout.parcel_volume(s), layout.ncsnr(s)] + [layout.betas(s, k) for k in range(1, n_sessions + 1)]
    return files


def _sessions(n_trials: int, spec: MiniNSDSpec) -> np.ndarray:
    return (np.arange(n_trials) // spec.trials_per_session) + 1


def write_stimulus_release(root: Path, spec: MiniNSDSpec | None = None) -> None:
    """First stage: what defines the stimuli (images, captions, stim info, experiment design, the
    subjects' behavioural responses) and the atlas files. Models read these; no model is run."""
    import h5py
    from scipy.io import savemat

    spec = spec or MiniNSDSpec()
    rng = np.random.default_rng(spec.seed)
    layout = NSDLayout(Path(root))
    n_subj = len(spec.subjects)
    n_images = spec.n_shared + n_subj * spec.n_unique
    images, captions = make_images(n_images, spec.image_size, rng)
    kid = np.arange(1, n_images + 1)  # 73KIDs (1-based)
    shared = kid[: spec.n_shared]
    unique = {s: kid[spec.n_shared + i * spec.n_unique : spec.n_shared + (i + 1) * spec.n_unique]
              for i, s in enumerate(spec.subjects)}

    # stimuli, stim info, captions
    with atomic_path(layout.stimuli) as tmp, h5py.File(tmp, "w") as f:
        # one image per chunk: a reader of one image decompresses that image only
        f.create_dataset("imgBrick", data=images, compression="gzip", compression_opts=1,
                         chunks=(1, *images.shape[1:]))
    coco_ids = 100000 + rng.permutation(900000)[:n_images]
    coco_split = np.where(rng.random(n_images) < 0.85, "train2017", "val2017")
    info = pd.DataFrame({"cocoId": coco_ids, "cocoSplit": coco_split, "nsdId": kid - 1,
                         "shared1000": np.isin(kid, shared)})
    for s in range(1, 9):
        name = f"subj{s:02d}"
        info[f"subject{s}"] = np.isin(kid, shared) | (np.isin(kid, unique[name]) if name in unique else False)
    with atomic_path(layout.stim_info) as tmp:
        info.to_csv(tmp)
    ann_id = 1
    for split in ("train2017", "val2017"):
        sel = np.flatnonzero(coco_split == split)
        anns = []
        for i in sel:
            for c in captions[i]:
                anns.append({"image_id": int(coco_ids[i]), "id": ann_id, "caption": c})
                ann_id += 1
        doc = {"info": {"description": "mini-NSD COCO-style captions"},
               "images": [{"id": int(coco_ids[i]), "file_name": f"{coco_ids[i]:012d}.jpg"} for i in sel],
               "annotations": anns}
        write_text(json.dumps(doc), layout.captions(split))

    # experiment design (1-based, as NSD): subjectim rows = subj01..subj08
    n_per = spec.n_shared + spec.n_unique
    subjectim = np.zeros((8, n_per), dtype=np.int64)
    for s in range(1, 9):
        name = f"subj{s:02d}"
        subjectim[s - 1] = np.concatenate([shared, unique.get(name, unique[spec.subjects[0]])])
    order = np.concatenate([rng.permutation(n_per) + 1 for _ in range(spec.repeats)])
    with atomic_path(layout.expdesign, suffix=".mat") as tmp:
        savemat(tmp, {"masterordering": order[None, :], "subjectim": subjectim, "sharedix": shared[None, :]})

    # label table: every HCP-MMP1 parcel, as NSD ships it
    parcels = hcp_parcels()
    ctab = "0 Unknown\n" + "".join(f"{i} {n}\n" for i, n in zip(parcels["index"], parcels["name"], strict=True))
    write_text(ctab, layout.parcel_table)
    # the planted parcels on fsaverage (deterministic, no random numbers drawn)
    from brainalign.figures.brainmap import write_mini_atlas  # (the figures package is slow to import: here only)

    write_mini_atlas(layout, {int(parcels.set_index("name").loc[n, "index"]): n for n in spec.planted})

    # behavioural responses: which image each trial showed, session/run/trial, old/new
    for subject in spec.subjects:
        trial_kid = subjectim[subject_number(subject) - 1][order - 1]
        n_trials = len(trial_kid)
        sessions = _sessions(n_trials, spec)
        runs_per_session = 12
        per_run = int(np.ceil(spec.trials_per_session / runs_per_session))
        within = np.arange(n_trials) % spec.trials_per_session
        first_seen: dict[int, int] = {}
        is_old = []
        for i, k in enumerate(trial_kid):
            is_old.append(int(k in first_seen))
            first_seen.setdefault(int(k), i)
        # reaction times from their own stream, so the brain stage's draws do not depend on them
        rt_rng = np.random.default_rng([spec.seed, subject_number(subject), 1])
        resp = pd.DataFrame({
            "SUBJECT": subject_number(subject), "SESSION": sessions, "RUN": within // per_run + 1,
            "TRIAL": within % per_run + 1, "73KID": trial_kid, "10KID": order, "ISOLD": is_old,
            "ISCORRECT": 1, "RT": np.round(rt_rng.uniform(400, 1200, n_trials), 1), "BUTTON": 1,
            "MISSINGDATA": 0,
        })
        with atomic_path(layout.responses(subject), suffix=".tsv") as tmp:
            resp.to_csv(tmp, sep="\t", index=False)


def read_stimulus_release(root: Path) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """What the brain stage needs from the first stage's files: the images (n, H, W, 3) in 73KID
    order, each image's first caption, ``masterordering`` and ``subjectim`` (1-based)."""
    import h5py
    from scipy.io import loadmat

    layout = NSDLayout(Path(root))
    with h5py.File(layout.stimuli, "r") as f:
        images = f["imgBrick"][:]
    info = pd.read_csv(layout.stim_info, index_col=0)
    first: dict[int, str] = {}
    for split in ("train2017", "val2017"):
        for ann in sorted(json.loads(layout.captions(split).read_text())["annotations"], key=lambda a: a["id"]):
            first.setdefault(int(ann["image_id"]), ann["caption"])
    captions = [first[int(c)] for c in info.sort_values("nsdId")["cocoId"]]
    design = loadmat(layout.expdesign)
    return images, captions, design["masterordering"].reshape(-1), design["subjectim"]


def write_brain_release(root: Path, vision_entry, language_entry, spec: MiniNSDSpec | None = None) -> dict:
    """Second stage: per subject the parcel volume, the single-trial betas and ncsnr, from the first
    stage's files and the planted read-outs; writes ``ground_truth.json`` last and returns it."""
    import nibabel as nib

    from brainalign.models.features import build_language_model, build_vision_model, extract_language, extract_vision

    spec = spec or MiniNSDSpec()
    layout = NSDLayout(Path(root))
    images, first_captions, order, subjectim = read_stimulus_release(root)
    n_images = len(images)
    parcels = hcp_parcels()

    # the representations the parcels read out
    vis_model = build_vision_model(vision_entry)
    vis_names, vis_layers = extract_vision(vis_model, images)
    tok, lang_model = build_language_model(language_entry)
    lang_names, lang_layers = extract_language(tok, lang_model, first_captions)
    reps = {"vision": (vision_entry.name, vis_names, vis_layers),
            "language": (language_entry.name, lang_names, lang_layers)}
    truth = {"seed": spec.seed, "noise": spec.noise, "parcels": {}, "stimuli": stimulus_latent(n_images)}
    for parcel, source in spec.planted.items():
        if source is None:
            truth["parcels"][parcel] = None
            continue
        model, names, _ = reps[source[0]]
        truth["parcels"][parcel] = {"modality": source[0], "model": model, "layer": source[1],
                                    "layer_name": names[source[1]], "n_layers": len(names)}

    table = parcels.set_index("name")
    for subject in spec.subjects:
        srng = np.random.default_rng([spec.seed, subject_number(subject)])
        vol = make_parcel_volume(spec, srng)
        affine = np.diag([1.8, 1.8, 1.8, 1.0])
        with atomic_path(layout.parcel_volume(subject), suffix=".nii.gz") as tmp:
            nib.save(nib.Nifti1Image(vol, affine), tmp)
        trial_kid = subjectim[subject_number(subject) - 1][order - 1]
        n_trials = len(trial_kid)
        # per-image signal of every voxel (unit variance), then trials = signal + noise
        signal = np.zeros((n_images + 1, vol.size), dtype=np.float32)
        flat = vol.reshape(-1)
        for parcel, source in spec.planted.items():
            vox = np.flatnonzero(flat == table.loc[parcel, "index"])
            if source is None:
                continue
            feats = _zscore(reps[source[0]][2][source[1]].astype(np.float64))
            w = srng.standard_normal((feats.shape[1], vox.size)) / np.sqrt(feats.shape[1])
            sig = _zscore(feats @ w)
            signal[1:, vox] = sig.astype(np.float32)
        baseline = srng.normal(0, 0.5, vol.size).astype(np.float32)
        in_brain = (flat >= 0).astype(np.float32)
        sessions = _sessions(n_trials, spec)
        for sess in np.unique(sessions):
            t = np.flatnonzero(sessions == sess)
            noise = srng.standard_normal((len(t), vol.size)).astype(np.float32) * spec.noise
            betas = (signal[trial_kid[t]] + noise + baseline) * in_brain  # percent signal change
            data = np.clip(np.round(betas * 300), -32768, 32767).astype(np.int16)
            data = data.T.reshape(*vol.shape, len(t))
            with atomic_path(layout.betas(subject, int(sess)), suffix=".nii.gz") as tmp:
                nib.save(nib.Nifti1Image(data, affine), tmp)
        # NSD's ncsnr: signal SD / noise SD per voxel (planted voxels: unit signal, noise SD
        # spec.noise; the control parcel and unlabelled cortex: no signal; outside the brain: NaN)
        ncsnr = np.where(signal[1:].std(0) > 0, 1.0 / spec.noise, 0.0).astype(np.float32)
        ncsnr[flat < 0] = np.nan
        with atomic_path(layout.ncsnr(subject), suffix=".nii.gz") as tmp:
            nib.save(nib.Nifti1Image(ncsnr.reshape(vol.shape), affine), tmp)
    write_text(json.dumps(truth, indent=2), Path(root) / "ground_truth.json")
    return truth
