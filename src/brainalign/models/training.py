"""A small, real training run on the mini-NSD: timm checkpoints along a training trajectory.

A timm CNN is trained from random init to tell which bundled photo
(:data:`brainalign.data.mini_nsd.PHOTOS`) each mini-NSD image was cropped from. The
run writes the files timm's ``train.py`` writes (``checkpoint-<epoch>.pth.tar``
with ``state_dict`` / ``state_dict_ema`` / ``metric``, and ``summary.csv``), so a
model registry entry ``checkpoints: <out_dir>`` turns the run into one model per
epoch, and the workflow can show brain alignment and task performance vs epoch.

Epochs are numbered from 1 (``checkpoint-1.pth.tar`` is the model after one
epoch; timm's own train.py numbers them from 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.data.nsd import FIX_ROOT, NSDLayout, read_captions
from brainalign.io import InputError, atomic_path, require_file, write_csv

HELD_OUT = 0.2  # fraction of each class's images held out for evaluation
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 0.05
WARMUP_STEPS = 5
SCALE = (0.35, 1.0)  # random resized crop: area fraction of the image
RATIO = (3 / 4, 4 / 3)  # and aspect ratio, as timm's defaults
SUMMARY_COLUMNS = ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5"]


def photo_labels(nsd_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """73KIDs (1-based) of every stimulus in the release, and the photo each was cropped from.

    The label of an image is the index into :data:`brainalign.data.mini_nsd.PHOTOS`
    of the photo whose description its first COCO caption contains
    (case-insensitive). Stimuli come from the stim info CSV (``nsdId + 1``), in
    increasing order, so row ``kid - 1`` of ``imgBrick`` is the image of ``kid``.
    Raises :class:`InputError` if a caption names no photo or several (the
    release is then not a mini-NSD).
    """
    from brainalign.data.mini_nsd import PHOTOS

    layout = NSDLayout(Path(nsd_root))
    info = pd.read_csv(require_file(layout.stim_info, "NSD stimulus info", FIX_ROOT))
    kids = np.sort(info["nsdId"].to_numpy(dtype=np.int64) + 1)
    split_of = dict(zip(info["nsdId"] + 1, info["cocoSplit"], strict=True))
    captions = read_captions(layout, kids)["caption"].str.lower()
    descriptions = [what.lower() for _, what in PHOTOS]
    labels = np.empty(len(kids), dtype=np.int64)
    for i, (kid, caption) in enumerate(zip(kids, captions, strict=True)):
        hits = [p for p, what in enumerate(descriptions) if what in caption]
        if len(hits) != 1:
            found = "no" if not hits else "more than one"
            raise InputError(
                f"{layout.captions(split_of[kid])}: the caption of 73KID {kid} ({caption!r}) describes {found} "
                f"mini-NSD photo; training by source photo needs a mini-NSD release (set nsd_root to one)"
            )
        labels[i] = hits[0]
    return kids, labels


def _split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, held out): a seeded split, ``HELD_OUT`` of every class held out."""
    rng = np.random.default_rng([seed, 7341])
    train, held = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_held = max(1, round(HELD_OUT * len(rows))) if len(rows) > 1 else 0
        held.append(rows[:n_held])
        train.append(rows[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def _augment(x, size: int, gen):
    """Per-image random resized crop (timm's scale/ratio ranges) and horizontal flip, to ``size``."""
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    u = torch.rand(n, 5, generator=gen)
    area = SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 0]
    log_r = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * u[:, 1]
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / height as fractions of the image
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (2 * u[:, 2] - 1)  # crop centre in [-1, 1] coordinates, inside the image
    cy = (1 - h) * (2 * u[:, 3] - 1)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _evaluate(model, x, y) -> tuple[float, float, float]:
    """Held-out (loss, top-1 %, top-5 %) of ``model`` in eval mode."""
    import torch
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + 128]) for i in range(0, len(x), 128)])
    loss = F.cross_entropy(logits, y).item()
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    top1 = (top[:, 0] == y).float().mean().item() * 100
    top5 = (top == y[:, None]).any(1).float().mean().item() * 100
    return loss, top1, top5


def train_checkpoints(
    nsd_root: Path,
    out_dir: Path,
    architecture: str = "mobilenetv3_small_050",
    epochs: list[int] = [1, 2, 4, 8],  # noqa: B006 (never mutated)
    image_size: int = 96,
    seed: int = 0,
    ema_decay: float = 0.9,
) -> pd.DataFrame:
    """Train ``architecture`` from random init to classify mini-NSD images by source photo.

    Data: every image of ``nsd_stimuli.hdf5`` with its :func:`photo_labels`
    label (``num_classes = len(PHOTOS)``, class = photo index); a seeded,
    stratified split holds out 20% of each class. Training: ``max(epochs)``
    epochs of AdamW (lr 3e-3, weight decay 0.05, 5 warm-up steps then cosine
    decay to 0 over the run), batch 64, random resized crop (area 0.35-1,
    aspect 3/4-4/3) and horizontal flip at ``image_size`` px, normalised with
    the model's pretrained_cfg mean/std. CPU, one thread (the torch thread
    count is restored afterwards): bitwise reproducible for a given ``seed``
    whatever the core count (same torch build), and unharmed by other jobs
    on the cores, which slowed a 2-thread run several-fold.

    The default architecture keeps its stages in ``model.blocks``, as
    :func:`brainalign.models.features.block_container` needs (timm ResNets do not).

    An EMA copy of the weights is kept (timm ``ModelEmaV3``, ``ema_decay``
    per step; batch-norm running statistics are copied from the live model,
    not averaged again); **evaluation uses the EMA weights**, on the held-out images
    resized whole to ``image_size`` (no crop). After each epoch in ``epochs``
    writes ``out_dir/checkpoint-<epoch>.pth.tar`` in timm train.py's format
    (``epoch``, ``arch``, ``state_dict``, ``state_dict_ema``, ``metric`` =
    held-out top-1 of the EMA weights, plus ``args``), and at the end
    ``out_dir/summary.csv`` (``epoch, train_loss, eval_loss, eval_top1,
    eval_top5``, one row per epoch, accuracies in percent); every file atomically.
    Returns the summary.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(Path(nsd_root), Path(out_dir), architecture, epochs, image_size, seed, ema_decay)
    finally:
        torch.set_num_threads(threads)


def _train(nsd_root: Path, out_dir: Path, architecture: str, epochs: list[int], image_size: int, seed: int,
           ema_decay: float) -> pd.DataFrame:
    import h5py
    import timm
    import torch
    import torch.nn.functional as F
    from timm.utils import ModelEmaV3

    from brainalign.data.mini_nsd import PHOTOS

    save_at = sorted({int(e) for e in epochs})
    if not save_at or save_at[0] < 1:
        raise InputError(f"epochs {list(epochs)}: give epoch numbers >= 1 at which to save checkpoints")
    n_epochs = save_at[-1]
    layout = NSDLayout(nsd_root)
    kids, labels = photo_labels(layout.root)
    with h5py.File(require_file(layout.stimuli, "NSD stimuli", FIX_ROOT), "r") as f:
        bricks = f["imgBrick"]
        if bricks.shape[0] < kids.max():
            raise InputError(f"{layout.stimuli}: {bricks.shape[0]} images, but the stim info lists 73KID {kids.max()}")
        images = bricks[()][kids - 1]

    torch.manual_seed(seed)
    n_classes = len(PHOTOS)
    model = timm.create_model(architecture, pretrained=False, num_classes=n_classes)
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1)
    x_all = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    y_all = torch.from_numpy(labels)
    train_rows, held_rows = _split(labels, seed)
    x_train, y_train = x_all[train_rows], y_all[train_rows]
    x_held = F.interpolate(x_all[held_rows], size=(image_size, image_size), mode="bilinear", antialias=True,
                           align_corners=False)
    y_held = y_all[held_rows]

    ema = ModelEmaV3(model, decay=ema_decay, exclude_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = -(-len(train_rows) // BATCH_SIZE)
    total = n_epochs * steps_per_epoch
    warmup = min(WARMUP_STEPS, total - 1)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 0 at the last step
        if step < warmup:
            return LR * (step + 1) / (warmup + 1)
        return LR * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(total - warmup, 1)))

    gen = torch.Generator().manual_seed(seed)
    args = {"model": architecture, "num_classes": n_classes, "img_size": image_size, "epochs": n_epochs,
            "batch_size": BATCH_SIZE, "lr": LR, "weight_decay": WEIGHT_DECAY, "opt": "adamw",
            "model_ema_decay": ema_decay, "seed": seed, "held_out": HELD_OUT}
    rows, step = [], 0
    for epoch in range(1, n_epochs + 1):
        model.train()
        order = torch.randperm(len(train_rows), generator=gen)
        losses = []
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(_augment(x_train[idx], image_size, gen)), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update(model, step=step)
            losses.append(loss.item())
            step += 1
        eval_loss, top1, top5 = _evaluate(ema.module, x_held, y_held)
        rows.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "eval_loss": eval_loss,
                     "eval_top1": top1, "eval_top5": top5})
        if epoch in save_at:
            state = {"epoch": epoch, "arch": architecture, "state_dict": model.state_dict(),
                     "state_dict_ema": ema.module.state_dict(), "metric": top1, "version": 2, "args": args}
            with atomic_path(out_dir / f"checkpoint-{epoch}.pth.tar", suffix=".tar") as tmp:
                torch.save(state, tmp)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    write_csv(summary, out_dir / "summary.csv")
    return summary
