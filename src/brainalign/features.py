"""Layer features of vision (timm) and language (transformers) models.

One forward pass gives every layer: forward hooks on each block of the model's
main block container (vision) or ``output_hidden_states`` (language). Each
layer is pooled to one vector per stimulus:

* vision, 4-D block output: mean over the spatial axes, on the model's own
  layout (NCHW, or NHWC where the timm model says ``output_fmt == 'NHWC'``);
* vision, 3-D tokens (N, T, C): mean over tokens, CLS included;
* language: the hidden state of the LAST token, for all ``num_hidden_layers + 1``
  hidden states (layer 0 = embeddings), left padding.

Features are stored as float16, one HDF5 file per (model, stimulus set).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

# Offline by default: weights come from local files or the local Hugging Face cache only.
# (Read by huggingface_hub when it is first imported, so set before timm/transformers load.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from brainalign.io import InputError, Progress, atomic_path, h5_loader
from brainalign.models import ModelEntry, hub_cache, weights_path

BLOCK_CONTAINERS = ("blocks", "stages", "features", "layers", "layer", "encoder.layers", "levels")
PROMPT = "Consider the image described by the following sentences: \n\n'{caption}'"
PLAIN_TEMPLATE = "<user>: {message}\n<assistant>: "


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("config key 'device': 'cuda' requested but no GPU is visible (use cpu or auto)")
    return device


# ----------------------------------------------------------------------------- vision


def build_vision_model(entry: ModelEntry):
    """A timm model in eval mode with ``entry``'s weights (random init: seeded)."""
    import timm
    import torch

    torch.manual_seed(entry.seed)
    if entry.weights == "timm-hub":  # timm's pretrained weights, from the local cache only
        try:
            return timm.create_model(entry.architecture, pretrained=True).eval()
        except Exception as exc:
            raise InputError(
                f"model {entry.name!r}: pretrained timm weights not in the local cache {hub_cache()} "
                f"(download them there first, e.g. on a login node with internet): {type(exc).__name__}"
            ) from exc
    num_classes = entry.extra.get("num_classes")  # a checkpoint of a run on another task than ImageNet
    kwargs = {"num_classes": int(num_classes)} if num_classes is not None else {}
    model = timm.create_model(entry.architecture, pretrained=False, **kwargs)
    if entry.extra.get("input_size"):  # the resolution the run was trained and evaluated at, whole image
        size = int(entry.extra["input_size"])
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size), "crop_pct": 1.0}
    path = weights_path(entry)
    if path is not None:
        state = _load_state(path, entry.name)
        state = state.get("state_dict_ema", state.get("state_dict", state))
        try:
            model.load_state_dict(_match_state_dict(state, model.state_dict(), entry.name))
        except InputError as exc:
            raise InputError(f"{path}: {exc}; these weights are for another architecture than "
                             f"{entry.architecture!r}: fix the registry's architecture or weights") from None
    return model.eval()


def _load_state(path: Path, name: str) -> dict:
    """A PyTorch state dict from ``path``; a corrupt or truncated file is an error naming it."""
    import torch

    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zipfile, pickle and safetensors raise several types
        raise InputError(f"{path}: weights of model {name!r} unreadable ({type(exc).__name__}); "
                         "the file is corrupt or truncated: download it again") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: weights of model {name!r} are a {type(state).__name__}, not a state dict")
    return state


def _match_state_dict(state: dict, target: dict, name: str) -> dict:
    """Map ``state`` onto ``target``'s keys: by name, or by order when names differ.

    Weights exported from other EfficientNet ports name tensors differently but
    store them in the same order and shapes as timm; the shapes are checked.
    """
    if set(state) == set(target):
        return state
    src = [(k, v) for k, v in state.items()]
    dst = list(target.items())
    if len(src) != len(dst):
        raise InputError(f"model {name!r}: weights have {len(src)} tensors, the timm model {len(dst)}")
    out = {}
    for (ks, vs), (kd, vd) in zip(src, dst, strict=True):
        if tuple(vs.shape) != tuple(vd.shape):
            raise InputError(f"model {name!r}: weight {ks} {tuple(vs.shape)} does not fit {kd} {tuple(vd.shape)}")
        out[kd] = vs
    return out


def block_container(model):
    """The model's main sequence of blocks, and its attribute path."""
    for path in BLOCK_CONTAINERS:
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        children = list(obj.children()) if hasattr(obj, "children") else []
        if len(children) > 1:
            return path, children
    raise InputError(f"{type(model).__name__}: no block container among {BLOCK_CONTAINERS}")


def pool_output(out, channels_last: bool):
    """Pool one block output to (N, C): see module docstring."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 4:
        return out.mean(dim=(1, 2)) if channels_last else out.mean(dim=(2, 3))
    if out.ndim == 3:
        return out.mean(dim=1)
    if out.ndim == 2:
        return out
    raise ValueError(f"cannot pool a block output of shape {tuple(out.shape)}")


def vision_transform(model):
    """The model's own timm eval transform."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    return timm.data.create_transform(**cfg, is_training=False)


def extract_vision(model, images, device: str = "cpu", batch_size: int = 32) -> tuple[list[str], list[np.ndarray]]:
    """Pooled block outputs for ``images`` (uint8 arrays (H, W, 3) or PIL images).

    Returns ``(layer_names, [array of shape (n_images, C_l) float32])``.
    fp32 on CPU, fp16 autocast on CUDA.
    """
    import torch
    from PIL import Image

    path, blocks = block_container(model)
    channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
    names = [f"{path}.{i}" for i in range(len(blocks))]
    captured: list = [None] * len(blocks)

    def hook(i):
        def fn(_module, _inputs, output):
            captured[i] = pool_output(output, channels_last).float().cpu()
        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    transform = vision_transform(model)
    # channels_last: the fast layout for convolutions on CPU and GPU; hooks see the
    # same logical (N, C, H, W) tensors, so pooling is unaffected.
    model = model.to(device=device, memory_format=torch.channels_last)
    # each layer's (n_images, C) output is allocated once, at the first batch, and filled in place
    outs: list[np.ndarray | None] = [None] * len(blocks)
    progress = Progress(len(images), "features", "images")
    try:
        with torch.inference_mode(), torch.autocast("cuda", enabled=device.startswith("cuda")):
            for start in range(0, len(images), batch_size):
                batch = [
                    transform(im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)))
                    for im in images[start : start + batch_size]
                ]
                model(torch.stack(batch).to(device=device, memory_format=torch.channels_last))
                for i, c in enumerate(captured):
                    if outs[i] is None:
                        outs[i] = np.empty((len(images), c.shape[1]), dtype=np.float32)
                    outs[i][start : start + len(batch)] = c.numpy()
                progress.step(len(batch))
    finally:
        for h in handles:
            h.remove()
    return names, [o if o is not None else np.empty((0, 0), np.float32) for o in outs]


# ----------------------------------------------------------------------------- language


def build_language_model(entry: ModelEntry):
    """``(tokenizer, model)`` from local files only (random init from the config if asked)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    # the repository's own code runs only for entries that opt in (registry `trust_remote_code: true`)
    remote = {"trust_remote_code": True} if entry.trust_remote_code else {}
    if entry.weights == "hf-hub":  # a Hugging Face model (and revision) from the local cache only
        revision = entry.extra.get("revision")
        try:
            tokenizer = AutoTokenizer.from_pretrained(entry.architecture, revision=revision, local_files_only=True,
                                                      **remote)
            dtype = torch.float16 if torch.cuda.is_available() else torch.float32
            # models needing several GPUs (registry `gpus` > 1) are spread over them
            spread = {"device_map": "auto"} if entry.gpus > 1 and torch.cuda.device_count() > 1 else {}
            model = AutoModel.from_pretrained(entry.architecture, revision=revision, local_files_only=True,
                                              dtype=dtype, **spread, **remote)
        except OSError as exc:
            raise InputError(
                f"model {entry.name!r}: {entry.architecture}@{revision or 'main'} not in the local Hugging Face "
                f"cache {hub_cache()} (download it there first)"
            ) from exc
        return tokenizer, model.eval()
    path = weights_path(entry)
    if entry.architecture.startswith("package:"):
        arch = weights_path(ModelEntry(entry.name, entry.modality, entry.source, entry.architecture,
                                       weights=entry.architecture))
    else:
        arch = Path(entry.architecture)
    source = path if path is not None else arch
    if not Path(source).exists():
        raise InputError(
            f"model {entry.name!r}: no local files at {source} (offline: download the model there first)"
        )
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **remote)
    if path is None:
        torch.manual_seed(entry.seed)
        model = AutoModel.from_config(AutoConfig.from_pretrained(source, local_files_only=True, **remote), **remote)
    else:
        try:
            model, info = AutoModel.from_pretrained(source, local_files_only=True, output_loading_info=True,
                                                    **remote)
        except Exception as exc:  # noqa: BLE001 - a corrupt file or tensors of another shape, many types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{source}: weights of model {entry.name!r} do not load ({first[:200]}); "
                             "download them again or fix the registry's weights") from None
        absent = sorted(info.get("missing_keys", ())) + sorted(info.get("mismatched_keys", ()))
        if absent:  # transformers would initialise these at random with a warning only
            raise InputError(f"{source}: weights of model {entry.name!r} lack {len(absent)} tensors of the "
                             f"architecture (e.g. {absent[0]}): they are for another model; fix the registry")
    return tokenizer, model.eval()


FIXED_DATE = "26 Jul 2024"  # chat templates that print today's date get this one instead


def deterministic_template(template: str) -> str:
    """``template`` with calls of ``strftime_now(...)`` (today's date) replaced by :data:`FIXED_DATE`.

    Llama-3.x templates put the current date into the system prompt; features must not
    depend on the day they were extracted.
    """
    import re

    return re.sub(r"strftime_now\([^)]*\)", repr(FIXED_DATE), template)


def render_prompt(tokenizer, caption: str) -> str:
    """The SPEC prompt, through the model's chat template (plain template if it has none)."""
    message = PROMPT.format(caption=caption)
    template = getattr(tokenizer, "chat_template", None)
    if template:
        if isinstance(template, str):
            template = deterministic_template(template)
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True,
            chat_template=template, date_string=FIXED_DATE,
        )
    return PLAIN_TEMPLATE.format(message=message)


def extract_language(tokenizer, model, captions, device: str = "cpu",
                     batch_size: int = 32) -> tuple[list[str], list[np.ndarray]]:
    """Last-token hidden states of all layers for the rendered prompts of ``captions``.

    Returns ``(layer_names, [array of shape (n_captions, hidden) float32])``.
    """
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model, "hf_device_map", None):  # spread over several GPUs: inputs go to the first
        device = str(model.device)
    else:
        model = model.to(device)
        if device.startswith("cuda"):
            model = model.half()
    prompts = [render_prompt(tokenizer, c) for c in captions]
    # With left padding, positions must count from each prompt's first real token, or
    # absolute position embeddings (BERT-style) shift with the batch's longest prompt.
    import inspect

    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    chunks: list[list] = []
    progress = Progress(len(prompts), "features", "prompts")
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(
                prompts[start : start + batch_size], return_tensors="pt", padding=True,
                truncation=True, max_length=512,
            ).to(device)
            if takes_positions:
                enc["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
            out = model(**enc, output_hidden_states=True)
            states = out.hidden_states
            if not chunks:
                chunks = [[] for _ in states]
            for i, h in enumerate(states):
                chunks[i].append(h[:, -1, :].float().cpu().numpy())
            progress.step(len(enc["input_ids"]))
    names = ["embeddings"] + [f"layer.{i}" for i in range(1, len(chunks))]
    return names, [np.concatenate(c) for c in chunks]


# ----------------------------------------------------------------------------- storage


def write_features(path: Path, model: str, stimulus_ids: np.ndarray, layer_names: list[str],
                   layers: list[np.ndarray], metadata: dict) -> None:
    """Store pooled features as float16: ``stimulus_ids``, ``layers/NNN`` (n x d_l)."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["model"] = model
        f.attrs["layer_names"] = json.dumps(layer_names)
        f.attrs["metadata"] = json.dumps(metadata)
        f["stimulus_ids"] = np.asarray(stimulus_ids, dtype=np.int64)
        for i, arr in enumerate(layers):
            f[f"layers/{i:03d}"] = arr.astype(np.float16)


def read_features(path: Path, expected_ids: np.ndarray | None = None) -> tuple[list[str], list[np.ndarray], dict]:
    """``(layer_names, [float32 (n, d_l)], metadata)``; checks the stimulus ids if given."""
    names, loaders, meta = feature_loaders(path, expected_ids)
    return names, [load() for load in loaders], meta


def feature_loaders(path: Path, expected_ids: np.ndarray | None = None) -> tuple[list[str], list, dict]:
    """Like :func:`read_features`, with one zero-argument loader per layer instead of the arrays
    (so a job holds one layer's raw features at a time)."""
    import h5py

    with h5py.File(path, "r") as f:
        ids = f["stimulus_ids"][()]
        if expected_ids is not None and not np.array_equal(ids, np.asarray(expected_ids)):
            raise InputError(
                f"{path}: stimulus ids differ from the subject's ({len(ids)} vs {len(expected_ids)}); "
                "delete the file so it is extracted again"
            )
        names = json.loads(f.attrs["layer_names"])
        meta = json.loads(f.attrs["metadata"])
    return names, [h5_loader(path, f"layers/{i:03d}", np.float32) for i in range(len(names))], meta


class StimulusImages(Sequence):
    """The images of ``stimulus_ids`` (73KIDs, 1-based) in NSD's ``imgBrick``, read a batch at a
    time: ``len()``, and indexing or slicing -> uint8 arrays (n, H, W, 3). All of a subject's
    images at once would be ~9,000 x 425 x 425 x 3 = 4.9 GB; a batch of 32 is 17 MB."""

    def __init__(self, stimuli_hdf5: str | Path, stimulus_ids):
        import h5py

        self.path = Path(stimuli_hdf5)
        self.ids = np.asarray(stimulus_ids, dtype=np.int64) - 1
        try:
            with h5py.File(self.path, "r") as f:
                if "imgBrick" not in f:
                    raise InputError(f"{self.path}: no dataset 'imgBrick' (not NSD's nsd_stimuli.hdf5)")
                shape, chunks = f["imgBrick"].shape, f["imgBrick"].chunks
        except OSError as exc:
            raise InputError(f"{self.path}: not a readable HDF5 file ({exc}); download nsd_stimuli.hdf5 "
                             "again") from None
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(f"{self.path}: imgBrick has shape {shape}, expected (73000, H, W, 3) RGB images")
        if len(self.ids) and (self.ids.max() >= shape[0] or self.ids.min() < 0):
            raise InputError(f"{self.path}: 73KID out of range 1..{shape[0]}")
        self.shape = (len(self.ids), *shape[1:])
        # a chunked file whose chunks span several images: cache a whole row of chunks (every chunk of
        # chunks[0] images), else each one-image read decompresses all of them again
        row = int(np.prod(shape[1:])) * (chunks[0] if chunks else 1)
        self.cache_bytes = int(min(1 << 30, max(1 << 20, 1.25 * row)))

    def __len__(self) -> int:
        return len(self.ids)

    def _read(self, ids: np.ndarray) -> np.ndarray:
        import h5py

        out = np.empty((len(ids), *self.shape[1:]), dtype=np.uint8)
        with h5py.File(self.path, "r", rdcc_nbytes=self.cache_bytes, rdcc_nslots=100_003) as f:
            dset = f["imgBrick"]
            # one image per read (~90x faster than h5py's fancy indexing), in file order so that images
            # sharing chunks are read while those chunks are cached
            for j in np.argsort(ids, kind="stable"):
                dset.read_direct(out, np.s_[int(ids[j])], np.s_[int(j)])
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._read(self.ids[key])
        return self._read(self.ids[[key]])[0]


def load_stimulus_images(stimuli_hdf5: Path, stimulus_ids: np.ndarray) -> np.ndarray:
    """Images of the given 73KIDs (1-based) from NSD's ``imgBrick``, shape (n, H, W, 3) uint8, all
    at once (the features job streams them instead: :class:`StimulusImages`)."""
    return StimulusImages(stimuli_hdf5, stimulus_ids)[:]


class LoadedModel:
    """A registry model loaded once, extracting every layer for any number of stimulus sets."""

    def __init__(self, entry: ModelEntry, device: str):
        self.entry = entry
        self.device = resolve_device(device)
        if entry.modality == "vision":
            self.model = build_vision_model(entry)
        else:
            self.tokenizer, self.model = build_language_model(entry)

    def extract(self, stimuli: pd.DataFrame, stimuli_hdf5: Path,  # noqa: F821
                batch_size: int = 32) -> tuple[list[str], list[np.ndarray], dict]:
        """Every layer for one stimulus set (columns ``nsd_id``, ``caption``)."""
        if self.entry.modality == "vision":
            images = StimulusImages(stimuli_hdf5, stimuli["nsd_id"].to_numpy())
            names, layers = extract_vision(self.model, images, self.device, batch_size)
        else:
            names, layers = extract_language(self.tokenizer, self.model, stimuli["caption"].tolist(),
                                             self.device, batch_size)
        e = self.entry
        meta = {"modality": e.modality, "source": e.source, "architecture": e.architecture,
                "weights": e.weights, "trained": e.trained, "device": self.device}
        return names, layers, meta


def load_model(entry: ModelEntry, device: str) -> LoadedModel:
    """Load ``entry`` once for extraction on ``device`` (cpu, cuda, auto)."""
    return LoadedModel(entry, device)


def extract_model(entry: ModelEntry, stimuli: pd.DataFrame, stimuli_hdf5: Path, device: str,  # noqa: F821
                  batch_size: int = 32) -> tuple[list[str], list[np.ndarray], dict]:
    """Every layer of one registry model for one stimulus set (columns nsd_id, caption)."""
    return load_model(entry, device).extract(stimuli, stimuli_hdf5, batch_size)
