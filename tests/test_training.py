"""The training run on a small hand-built mini-NSD release: labels, timm checkpoints, summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import timm
import torch

from brainalign.data.mini_nsd import PHOTOS, make_images
from brainalign.data.nsd import NSDLayout
from brainalign.io import InputError
from brainalign.models.features import block_container, vision_transform
from brainalign.models.training import SUMMARY_COLUMNS, photo_labels, train_checkpoints

N_IMAGES = 360
EPOCHS = [1, 8]
SIZE = 48  # training image size
ARCH = "mobilenetv3_small_050"
CHANCE = 100 / len(PHOTOS)


def make_release(root: Path, n: int) -> NSDLayout:
    """The files photo_labels and train_checkpoints read, as mini_nsd.write_stimulus_release writes them.

    Stim info rows are shuffled and images alternate between the two caption
    files, so labels must be matched through nsdId and cocoId.
    """
    rng = np.random.default_rng(0)
    images, captions = make_images(n, 64, rng)
    layout = NSDLayout(root)
    layout.stimuli.parent.mkdir(parents=True)
    with h5py.File(layout.stimuli, "w") as f:
        f.create_dataset("imgBrick", data=images)
    coco_ids = 500000 + rng.permutation(n)
    coco_split = np.where(np.arange(n) % 3 == 0, "val2017", "train2017")
    info = pd.DataFrame({"cocoId": coco_ids, "cocoSplit": coco_split, "nsdId": np.arange(n)})
    layout.stim_info.parent.mkdir(parents=True)
    info.iloc[rng.permutation(n)].to_csv(layout.stim_info)
    ann_id = 1
    for split in ("train2017", "val2017"):
        anns = []
        for i in np.flatnonzero(coco_split == split):
            for c in captions[i]:
                anns.append({"image_id": int(coco_ids[i]), "id": ann_id, "caption": str(c)})
                ann_id += 1
        layout.captions(split).parent.mkdir(parents=True, exist_ok=True)
        layout.captions(split).write_text(json.dumps({"annotations": anns}))
    return layout


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> NSDLayout:
    return make_release(tmp_path_factory.mktemp("mini_nsd"), N_IMAGES)


@pytest.fixture(scope="module")
def run(release, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("run") / "checkpoints"
    return out, train_checkpoints(release.root, out, architecture=ARCH, epochs=EPOCHS, image_size=SIZE)


def test_labels_are_the_source_photos(release):
    kids, labels = photo_labels(release.root)
    assert kids.tolist() == list(range(1, N_IMAGES + 1))  # 73KIDs, 1-based, in imgBrick row order
    assert labels.tolist() == [i % len(PHOTOS) for i in range(N_IMAGES)]  # make_images: image i shows photo i % n


def test_caption_of_no_photo_names_the_file(release, tmp_path):
    root = tmp_path / "release"
    shutil.copytree(release.root, root)
    layout = NSDLayout(root)
    info = pd.read_csv(layout.stim_info)
    row = info[info["nsdId"] == 4].iloc[0]
    path = layout.captions(row["cocoSplit"])
    doc = json.loads(path.read_text())
    for ann in doc["annotations"]:
        if ann["image_id"] == row["cocoId"]:
            ann["caption"] = "A dog running on a beach"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="73KID 5") as err:
        photo_labels(root)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_checkpoints_and_summary_in_timm_format(run):
    out, summary = run
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1.pth.tar", "checkpoint-8.pth.tar", "summary.csv"]
    on_disk = pd.read_csv(out / "summary.csv")
    assert list(on_disk.columns) == SUMMARY_COLUMNS
    assert on_disk["epoch"].tolist() == list(range(1, max(EPOCHS) + 1))
    pd.testing.assert_frame_equal(on_disk, summary, check_dtype=False)
    assert ((summary["eval_top1"] >= 0) & (summary["eval_top1"] <= summary["eval_top5"])
            & (summary["eval_top5"] <= 100)).all()
    for epoch in EPOCHS:
        ckpt = torch.load(out / f"checkpoint-{epoch}.pth.tar", map_location="cpu", weights_only=True)
        assert {"epoch", "arch", "state_dict", "state_dict_ema", "metric"} <= set(ckpt)
        assert ckpt["epoch"] == epoch and ckpt["arch"] == ARCH
        assert ckpt["metric"] == pytest.approx(summary.set_index("epoch").loc[epoch, "eval_top1"])
        model = timm.create_model(ARCH, num_classes=len(PHOTOS))
        model.load_state_dict(ckpt["state_dict"])
        model.load_state_dict(ckpt["state_dict_ema"])
    # the workflow's feature extraction can read the trained model
    assert block_container(model)[0] == "blocks"
    x = vision_transform(model)(_pil(64)).unsqueeze(0)
    assert model.eval()(x).shape == (1, len(PHOTOS))


def _pil(size):
    from PIL import Image

    return Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8))


def test_accuracy_rises_above_chance(run):
    _, summary = run
    top1 = summary["eval_top1"].to_numpy()
    assert top1[-1] > 2 * CHANCE
    assert top1[-1] > top1[0]
    assert summary["train_loss"].iloc[-1] < summary["train_loss"].iloc[0]


def test_same_seed_same_run(release, tmp_path):
    threads = torch.get_num_threads()
    a = train_checkpoints(release.root, tmp_path / "a", architecture=ARCH, epochs=[2], image_size=32)
    b = train_checkpoints(release.root, tmp_path / "b", architecture=ARCH, epochs=[2], image_size=32)
    c = train_checkpoints(release.root, tmp_path / "c", architecture=ARCH, epochs=[2], image_size=32, seed=1)
    assert torch.get_num_threads() == threads  # restored
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    sa = torch.load(tmp_path / "a/checkpoint-2.pth.tar", weights_only=True)["state_dict_ema"]
    sb = torch.load(tmp_path / "b/checkpoint-2.pth.tar", weights_only=True)["state_dict_ema"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_epochs_must_be_positive(release, tmp_path):
    with pytest.raises(InputError, match="epochs"):
        train_checkpoints(release.root, tmp_path, epochs=[0, 2])


def test_declared_run_becomes_models_that_load_at_the_trained_resolution(run, tmp_path):
    """A registry entry with ``checkpoints`` + ``epochs`` (the workflow's own run) names one model per
    epoch before the files exist; each loads its EMA weights with the run's class count and extracts
    features at the resolution it was trained at."""
    import yaml

    from brainalign.models.features import build_vision_model, extract_vision
    from brainalign.models.registry import load_registry, select_models

    out_dir, _ = run
    reg = tmp_path / "models.yaml"
    reg.write_text(yaml.safe_dump({"cnn": {
        "modality": "vision", "source": "timm", "architecture": ARCH, "num_classes": len(PHOTOS),
        "input_size": 48, "checkpoints": str(out_dir), "epochs": [8, 1], "train": "mini_nsd"}}))
    registry = load_registry(reg)
    assert select_models(registry, ["cnn"], "vision") == ["cnn@epoch1", "cnn@epoch8"]
    entry = registry["cnn@epoch8"]
    assert entry.weights == str(out_dir / "checkpoint-8.pth.tar")
    assert entry.extra["summary"] == str(out_dir / "summary.csv") and entry.extra["run"] == "cnn"
    model = build_vision_model(entry)
    ckpt = torch.load(out_dir / "checkpoint-8.pth.tar", map_location="cpu", weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ckpt["state_dict_ema"][k])
    assert vision_transform(model).transforms[0].size in (48, [48], (48, 48))
    names, layers = extract_vision(model, [_pil(128)], "cpu")
    assert len(names) == len(layers) > 3
    # undeclared directory: globbed; a missing one is an error naming it
    reg.write_text(yaml.safe_dump({"cnn": {"modality": "vision", "source": "timm", "architecture": ARCH,
                                           "checkpoints": str(tmp_path / "nope")}}))
    with pytest.raises(InputError, match="nope"):
        load_registry(reg)
    reg.write_text(yaml.safe_dump({"cnn": {"modality": "vision", "source": "timm", "architecture": ARCH,
                                           "checkpoints": str(out_dir), "epochs": "all"}}))
    with pytest.raises(InputError, match="epochs"):
        load_registry(reg)
