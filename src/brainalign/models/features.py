"""Layer features of registry models, from every source (:data:`BUILDERS`).

One forward pass gives every layer: forward hooks on the model's layers, or its
``output_hidden_states`` (language models, image-text-to-text models). The layers
read are the source's default (each block of the model's block container; every
hidden state) or the modules the entry's ``layers:`` names (names or globs). Each
layer is pooled to one vector per stimulus (``pool:``, default per source):

* vision, 4-D block output: mean over the spatial axes, on the model's own
  layout (NCHW, or NHWC where the timm model says ``output_fmt == 'NHWC'``);
* vision, 3-D tokens (N, T, C): mean over tokens, CLS included (``pool: cls``: the first);
* language: the hidden state of the LAST real token, for all ``num_hidden_layers + 1``
  hidden states (layer 0 = embeddings), left padding (``pool: mean``: the mean over the
  real tokens).

Sources: ``timm``, ``torchvision``, ``python`` (a user's module), ``transformers``
(language models; image models with their processor; CLIP/SigLIP towers), ``open_clip``
(either tower) and ``vlm`` (:mod:`brainalign.models.vlm`). ``dtype:`` sets the model's precision.
Features are stored as float16, one HDF5 file per (model, stimulus set).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Offline by default: weights come from local files or the local Hugging Face cache only.
# (Read by huggingface_hub when it is first imported, so set before timm/transformers load.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

from brainalign.io import InputError, Progress, atomic_path, h5_loader
from brainalign.models.registry import ModelEntry, hub_cache, weights_path

BLOCK_CONTAINERS = ("blocks", "stages", "features", "layers", "layer", "encoder.layers", "levels",
                    "encoder.layer", "transformer.resblocks", "trunk.blocks", "trunk.stages")
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
        try:
            model.load_state_dict(_match_state_dict(state, model.state_dict(), entry.name))
        except InputError as exc:
            raise InputError(f"{path}: {exc}; these weights are for another architecture than "
                             f"{entry.architecture!r}: fix the registry's architecture or weights") from None
    return model.eval()


def _load_state(path: Path, name: str) -> dict:
    """The weights in ``path`` (see :func:`brainalign.models.checkpoint_io.load_state`: safetensors, state
    dicts, timm training checkpoints with their EMA weights; never arbitrary pickles)."""
    from brainalign.models.checkpoint_io import load_state

    return load_state(path, name)


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
    """The model's main sequence of blocks, and its attribute path.

    The first of :data:`BLOCK_CONTAINERS` with more than one child; else a model's top-level
    ``layer1, layer2, ...`` (torchvision and open_clip ResNets), as the path ``layer*``.
    """
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
    numbered = [(n, m) for n, m in model.named_children() if re.fullmatch(r"layer\d+", n)]
    if len(numbered) > 1:
        return "layer*", [m for _, m in sorted(numbered, key=lambda t: int(t[0][5:]))]
    raise InputError(f"{type(model).__name__}: no block container among {BLOCK_CONTAINERS} nor layer1, layer2, ...; "
                     "name the modules to read with the registry key 'layers'")


def default_layers(model) -> list[tuple[str, object]]:
    """``(name, module)`` of each block of the model's block container (see :func:`block_container`)."""
    path, blocks = block_container(model)
    if path == "layer*":
        return [(f"layer{i + 1}", b) for i, b in enumerate(blocks)]
    return [(f"{path}.{i}", b) for i, b in enumerate(blocks)]


def glob_regex(pattern: str) -> re.Pattern:
    """A module-name glob as a regex: ``*`` matches within one dotted part (``blocks.*`` is each block,
    not its submodules), ``**`` across parts, ``?`` one character; everything else literally."""
    out = []
    for token in re.split(r"(\*\*|\*|\?)", pattern):
        out.append({"**": ".*", "*": "[^.]*", "?": "[^.]"}.get(token, re.escape(token)))
    return re.compile("".join(out))


def select_layers(model, patterns: Sequence[str], name: str) -> list[tuple[str, object]]:
    """The modules named by ``patterns`` (registry key ``layers``: exact names or ``fnmatch`` globs such
    as ``blocks.*`` or ``encoder.layer.*.output``), in the model's own module order, each once."""
    modules = [(n, m) for n, m in model.named_modules() if n]
    chosen: set[str] = set()
    for pattern in patterns:
        rx = glob_regex(pattern)
        hits = {n for n, _ in modules if rx.fullmatch(n)}
        if not hits:
            tops = ", ".join(n for n, _ in list(model.named_children())[:8])
            raise InputError(f"model {name!r}: registry key 'layers': {pattern!r} matches no module of "
                             f"{type(model).__name__} (its top-level modules: {tops})")
        chosen |= hits
    return [(n, m) for n, m in modules if n in chosen]


def pool_output(out, channels_last: bool, pool: str = "mean", mask=None):
    """Pool one layer's output to (N, C): see module docstring.

    ``pool``: ``mean`` (spatial axes of a 4-D map, or tokens), ``cls`` (the first token), ``last``
    (the last token). ``mask`` (N, T): which tokens are real (padded text); ``cls``/``last`` then take
    each row's first/last real token and ``mean`` averages its real tokens only.
    """
    import torch

    if isinstance(out, (tuple, list)):
        out = out[0]
    elif not hasattr(out, "ndim") and hasattr(out, "to_tuple"):  # a transformers ModelOutput
        out = out.to_tuple()[0]
    if out.ndim == 4:
        if pool != "mean":
            raise InputError(f"pool: {pool!r} needs token outputs (N, T, C); this layer gives a "
                             f"{tuple(out.shape)} feature map: use pool: mean")
        return out.mean(dim=(1, 2)) if channels_last else out.mean(dim=(2, 3))
    if out.ndim == 3:
        if mask is not None and mask.shape[:2] == out.shape[:2]:
            real = mask.to(out.device).bool()
            if pool == "mean":
                m = real.to(out.dtype)
                return (out * m[..., None]).sum(dim=1) / m.sum(dim=1, keepdim=True).clamp_min(1)
            positions = torch.arange(out.shape[1], device=out.device).expand_as(real)
            idx = (positions.masked_fill(~real, -1).amax(dim=1) if pool == "last"
                   else positions.masked_fill(~real, out.shape[1]).amin(dim=1))
            return out[torch.arange(out.shape[0], device=out.device), idx]
        return out.mean(dim=1) if pool == "mean" else (out[:, 0] if pool == "cls" else out[:, -1])
    if out.ndim == 2:
        return out
    raise ValueError(f"cannot pool a block output of shape {tuple(out.shape)}")


def torch_dtype(name: str | None):
    """The torch dtype of registry key ``dtype`` (None: the default, as the device decides)."""
    import torch

    return None if name is None else {"float16": torch.float16, "bfloat16": torch.bfloat16,
                                      "float32": torch.float32}[name]


def vision_transform(model):
    """The model's own timm eval transform."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=model)
    return timm.data.create_transform(**cfg, is_training=False)


def imagenet_transform(size: int = 224, crop: bool = True):
    """Resize (shorter side) and centre crop to ``size`` (or the whole image at ``size`` x ``size`` when
    ``crop`` is False), ImageNet mean/std: the default of models that bring no transform of their own."""
    from torchvision import transforms as T

    resize = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)] if crop else [T.Resize((size, size))]
    return T.Compose([*resize, T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


def _as_pil(im):
    from PIL import Image

    return im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))


def run_layers(model, targets, batches, n: int, forward, *, pool: str, channels_last: bool = False,
               what: str = "images", name: str = "model") -> tuple[list[str], list[np.ndarray]]:
    """Forward hooks on ``targets`` (``(name, module)``); for each batch of ``batches`` (``(inputs,
    mask or None)``, ``inputs`` what ``forward(model, inputs)`` takes) each target's output is pooled
    (:func:`pool_output`, ``mask`` marking real tokens) into a preallocated (n, C) float32 array."""
    import torch

    names = [t for t, _ in targets]
    captured: list = [None] * len(targets)
    mask_now: list = [None]

    def hook(i):
        def fn(_module, _inputs, output):
            captured[i] = pool_output(output, channels_last, pool, mask_now[0]).float().cpu()
        return fn

    handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(targets)]
    # each layer's (n, C) output is allocated once, at the first batch, and filled in place
    outs: list[np.ndarray | None] = [None] * len(targets)
    progress = Progress(n, "features", what)
    start = 0
    try:
        with torch.inference_mode():
            for inputs, mask in batches:
                captured[:] = [None] * len(targets)
                mask_now[0] = mask
                forward(model, inputs)
                size = None
                for i, c in enumerate(captured):
                    if c is None:
                        raise InputError(f"model {name!r}: layer {names[i]!r} did not run in the forward pass; "
                                         "choose layers the model uses (registry key 'layers')")
                    if outs[i] is None:
                        outs[i] = np.empty((n, c.shape[1]), dtype=np.float32)
                    outs[i][start : start + len(c)] = c.numpy()
                    size = len(c)
                start += size or 0
                progress.step(size or 0)
    finally:
        for h in handles:
            h.remove()
    return names, [o if o is not None else np.empty((0, 0), np.float32) for o in outs]


def extract_vision(model, images, device: str = "cpu", batch_size: int = 32, *, layers=None, pool: str = "mean",
                   dtype: str | None = None, transform=None, forward=None, name: str = "model", targets=None,
                   ) -> tuple[list[str], list[np.ndarray]]:
    """Pooled layer outputs for ``images`` (uint8 arrays (H, W, 3) or PIL images).

    Returns ``(layer_names, [array of shape (n_images, C_l) float32])``. ``layers``: module names
    or globs (default: each block of the block container); ``pool``: see :func:`pool_output`;
    ``dtype``: the model's dtype (default: fp32 on CPU, fp16 autocast on CUDA); ``transform``:
    PIL image -> tensor (default: the model's timm transform); ``forward(model, batch)``: how
    to call the model (default ``model(batch)``).
    """
    import torch

    if layers:
        targets = select_layers(model, layers, name)
    targets = targets or default_layers(model)
    channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
    transform = transform or vision_transform(model)
    cast = torch_dtype(dtype)
    # channels_last: the fast layout for convolutions on CPU and GPU; hooks see the
    # same logical (N, C, H, W) tensors, so pooling is unaffected.
    model = model.to(device=device, memory_format=torch.channels_last)
    if cast is not None:
        model = model.to(cast)
    call = forward or (lambda m, x: m(x))
    autocast = cast is None and device.startswith("cuda")

    def run(m, x):
        with torch.autocast("cuda", enabled=autocast):
            call(m, x)

    def batches():
        for start in range(0, len(images), batch_size):
            x = torch.stack([transform(_as_pil(im)) for im in images[start : start + batch_size]])
            x = x.to(device=device, memory_format=torch.channels_last)
            yield (x.to(cast) if cast is not None else x), None

    return run_layers(model, targets, batches(), len(images), run, pool=pool, channels_last=channels_last,
                      name=name)


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


def extract_language(tokenizer, model, captions, device: str = "cpu", batch_size: int = 32, *, layers=None,
                     pool: str = "last", dtype: str | None = None, prompt: bool = True,
                     name: str = "model") -> tuple[list[str], list[np.ndarray]]:
    """Hidden states of all layers for the rendered prompts of ``captions``, at the last token.

    Returns ``(layer_names, [array of shape (n_captions, hidden) float32])``. Default: every hidden
    state (``embeddings``, ``layer.1`` ...), the LAST real token, left padding. ``layers``: module
    names or globs read through hooks instead; ``pool``: ``last``, ``mean`` (over the real tokens) or
    ``cls`` (the first real token); ``dtype``: the model's dtype (default: fp16 on CUDA, fp32 on CPU);
    ``prompt=False``: the captions alone, right padding (text towers of contrastive models).
    """
    import torch

    tokenizer.padding_side = "left" if prompt else "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cast = torch_dtype(dtype)
    if getattr(model, "hf_device_map", None):  # spread over several GPUs: inputs go to the first
        device = str(model.device)
    else:
        model = model.to(device)
        if cast is None and device.startswith("cuda"):
            cast = torch.float16
    if cast is not None:
        model = model.to(cast)
    texts = [render_prompt(tokenizer, c) for c in captions] if prompt else list(captions)
    # With left padding, positions must count from each prompt's first real token, or
    # absolute position embeddings (BERT-style) shift with the batch's longest prompt.
    import inspect

    takes_positions = prompt and "position_ids" in inspect.signature(model.forward).parameters

    # text towers take at most their context (CLIP: 77 tokens); prompts are cut at 512
    max_length = 512 if prompt else min(int(getattr(tokenizer, "model_max_length", 512)), 512)
    # batches of similar length: padding is computed like real tokens (COCO prompts in input order pad
    # ~18% of a batch, sorted ~2%); each row's features do not depend on its batch, and come back in order
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = np.argsort(lengths, kind="stable")

    def batches():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer([texts[i] for i in order[start : start + batch_size]], return_tensors="pt",
                            padding=True, truncation=True, max_length=max_length).to(device)
            if takes_positions:
                enc["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
            yield enc, enc["attention_mask"]

    def in_input_order(arrays):
        out = []
        for a in arrays:
            b = np.empty_like(a)
            b[order] = a
            out.append(b)
        return out

    if layers:
        targets = select_layers(model, layers, name)
        names, arrays = run_layers(model, targets, batches(), len(texts), lambda m, enc: m(**enc), pool=pool,
                                   what="prompts" if prompt else "captions", name=name)
        return names, in_input_order(arrays)
    chunks: list[list] = []
    progress = Progress(len(texts), "features", "prompts" if prompt else "captions")
    with torch.inference_mode():
        for enc, mask in batches():
            states = model(**enc, output_hidden_states=True).hidden_states
            if not chunks:
                chunks = [[] for _ in states]
            for i, h in enumerate(states):
                chunks[i].append(pool_output(h, False, pool, mask).float().cpu().numpy())
            progress.step(len(mask))
    names = ["embeddings"] + [f"layer.{i}" for i in range(1, len(chunks))]
    return names, in_input_order([np.concatenate(c) for c in chunks])


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


# ----------------------------------------------------------------------------- sources


@dataclass
class Reader:
    """How one loaded model turns a stimulus set into layers: ``images`` (vision towers), ``captions``
    (text), or both (``vlm``). ``targets``: the default ``(name, module)`` layers (None: the source's
    own default); ``pool``: the default pooling; ``forward(model, inputs)``: how the model is called."""

    model: object
    kind: str  # images | captions (a transformers tokenizer) | tokens (a tokenizer function) | vlm
    transform: object = None
    tokenizer: object = None
    forward: object = None
    targets: list | None = None
    pool: str = "mean"
    prompt: bool = True  # captions: the paper's prompt (language models) or the bare caption (text towers)
    extract_fn: object = None  # a source's own extraction (vlm)


def _seeded(entry: ModelEntry):
    import torch

    torch.manual_seed(entry.seed)


def _load_module_weights(model, entry: ModelEntry, strict_names: bool = True) -> None:
    """``entry``'s weight file into ``model`` (none for random init), errors naming the file."""
    path = weights_path(entry)
    if path is None:
        return
    state = _load_state(path, entry.name)
    try:
        model.load_state_dict(state if strict_names else _match_state_dict(state, model.state_dict(), entry.name))
    except (RuntimeError, InputError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise InputError(f"{path}: weights of model {entry.name!r} do not fit its architecture "
                         f"{entry.architecture!r} ({first}); fix the registry's architecture or weights") from None


def build_torchvision(entry: ModelEntry) -> Reader:
    """A torchvision architecture by name (``torchvision.models.get_model``), weights from a local file;
    the transform of its default weights (resize, centre crop, ImageNet statistics), or whole images
    at ``input_size`` (config ``vision_input_size``). Default layers: the block container
    (``features.*``) or ``layer1..layerN`` (ResNets)."""
    import torchvision

    _seeded(entry)
    kwargs = {"num_classes": int(entry.extra["num_classes"])} if entry.extra.get("num_classes") else {}
    try:
        model = torchvision.models.get_model(entry.architecture, weights=None, **kwargs)
    except ValueError:
        raise InputError(f"model {entry.name!r}: torchvision has no architecture {entry.architecture!r} "
                         "(see torchvision.models.list_models())") from None
    _load_module_weights(model, entry, strict_names=False)
    size = entry.extra.get("input_size")
    if size:
        transform = imagenet_transform(int(size), crop=False)
    else:
        try:
            transform = torchvision.models.get_model_weights(entry.architecture).DEFAULT.transforms()
        except (ValueError, AttributeError):
            transform = imagenet_transform(224)
    return Reader(model.eval(), "images", transform=transform)


def import_target(target: str, name: str):
    """``package.module:attr`` or ``path/to/file.py:attr`` (relative to the working directory: the
    workflow's root) -> the attribute. Only code a registry entry names explicitly runs."""
    import importlib
    import importlib.util

    module_part, _, attr = target.rpartition(":")
    if module_part.endswith(".py"):
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise InputError(f"model {name!r}: architecture {target!r}: no file {path} (paths are relative to "
                             "the workflow's directory)")
        spec = importlib.util.spec_from_file_location(f"brainalign_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as exc:
            raise InputError(f"model {name!r}: architecture {target!r}: cannot import {module_part!r} "
                             f"({exc})") from None
    if not hasattr(module, attr):
        raise InputError(f"model {name!r}: architecture {target!r}: {module_part} has no {attr!r}")
    return getattr(module, attr)


def build_python(entry: ModelEntry) -> Reader:
    """A user's own vision model: ``architecture: module:function`` or ``file.py:function``; the function
    returns an ``nn.Module`` or ``(module, transform)`` (PIL image -> tensor). Default transform:
    resize and centre crop to 224 px with ImageNet statistics (whole images at ``input_size`` if set).
    Weights: ``random`` (the function's own initialisation, seeded) or a local state-dict file."""
    import torch

    fn = import_target(entry.architecture, entry.name)
    _seeded(entry)
    out = fn()
    module, transform = out if isinstance(out, tuple) else (out, None)
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"model {entry.name!r}: {entry.architecture} returned a {type(module).__name__}, not a "
                         "torch.nn.Module (or a (module, transform) pair)")
    _load_module_weights(module, entry)
    if transform is None:
        size = entry.extra.get("input_size")
        transform = imagenet_transform(int(size), crop=False) if size else imagenet_transform(224)
    return Reader(module.eval(), "images", transform=transform)


def _hf_files(entry: ModelEntry) -> tuple[str, dict, bool]:
    """Where a transformers model's files are: ``(path or hub id, from_pretrained kwargs, random init)``."""
    remote = {"trust_remote_code": True} if entry.trust_remote_code else {}
    if entry.weights == "hf-hub":
        return entry.architecture, {"revision": entry.extra.get("revision"), "local_files_only": True, **remote}, False
    path = weights_path(entry)
    if entry.architecture.startswith("package:"):
        arch = weights_path(ModelEntry(entry.name, entry.modality, entry.source, entry.architecture,
                                       weights=entry.architecture))
    else:
        arch = Path(entry.architecture).expanduser()
    src = path if path is not None else arch
    if not Path(src).exists():
        raise InputError(f"model {entry.name!r}: no local files at {src} (offline: download the model there first)")
    return str(src), {"local_files_only": True, **remote}, path is None


def build_transformers_vision(entry: ModelEntry) -> Reader:
    """A transformers image model (ViT, DINOv2, CLIP or SigLIP's image tower, ...) with its own image
    processor. Default layers: the embeddings and each encoder block (the model's hidden states),
    pooled by the mean over tokens (``pool: cls``: the first token)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    src, kwargs, random_init = _hf_files(entry)
    try:
        processor = AutoImageProcessor.from_pretrained(src, **kwargs)
        if random_init:
            _seeded(entry)
            model = AutoModel.from_config(AutoConfig.from_pretrained(src, **kwargs),
                                          **({"trust_remote_code": True} if entry.trust_remote_code else {}))
        else:
            model = AutoModel.from_pretrained(src, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise InputError(f"model {entry.name!r}: no image model and processor at {src} ({first})") from None
    tower = getattr(model, "vision_model", model)  # a CLIP/SigLIP pair: its image tower
    targets = ([("embeddings", tower.embeddings)] if hasattr(tower, "embeddings") else []) + default_layers(tower)

    def transform(im):
        return processor(images=im, return_tensors="pt")["pixel_values"][0]

    return Reader(tower.eval(), "images", transform=transform, targets=targets,
                  forward=lambda m, x: m(pixel_values=x))


def build_open_clip(entry: ModelEntry) -> Reader:
    """An open_clip model: the image tower (``modality: vision``, its own preprocessing) or the text tower
    (``modality: language``: the bare captions through its own tokenizer, the last real token).
    Weights: ``random`` or a local checkpoint file (``open_clip.load_checkpoint``)."""
    import open_clip

    _seeded(entry)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(entry.architecture, pretrained=None)
    except RuntimeError as exc:
        raise InputError(f"model {entry.name!r}: open_clip has no model config {entry.architecture!r} ({exc}); "
                         "see open_clip.list_models()") from None
    path = weights_path(entry)
    if path is not None:
        try:
            open_clip.load_checkpoint(model, str(path))
        except Exception as exc:  # noqa: BLE001 - torch.load and load_state_dict raise several types
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: weights of model {entry.name!r} do not load into open_clip "
                             f"{entry.architecture!r} ({first})") from None
    model = model.eval()
    if entry.modality == "vision":
        return Reader(model.visual, "images", transform=preprocess, targets=default_layers(model.visual))
    tokenizer = open_clip.get_tokenizer(entry.architecture)
    text = getattr(model, "text", None)  # CustomTextCLIP keeps its text tower apart; CLIP holds it at the top
    prefix = "text." if text is not None else ""
    targets = [(prefix + n, m) for n, m in default_layers(text if text is not None else model)]
    pad = int(getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None) or 0)

    def encode(captions):
        tokens = tokenizer(list(captions))
        return tokens, tokens != pad

    return Reader(model, "tokens", tokenizer=encode, forward=lambda m, t: m.encode_text(t), targets=targets,
                  pool="last", prompt=False)


class LoadedModel:
    """A registry model loaded once, extracting every layer for any number of stimulus sets."""

    def __init__(self, entry: ModelEntry, device: str):
        self.entry = entry
        self.device = resolve_device(device)
        self.reader = build_reader(entry)
        x = entry.extra
        self.layers, self.dtype = x.get("layers"), x.get("dtype")
        self.pool = x.get("pool") or self.reader.pool

    @property
    def model(self):
        return self.reader.model

    def extract(self, stimuli: pd.DataFrame, stimuli_hdf5: Path,  # noqa: F821
                batch_size: int = 32) -> tuple[list[str], list[np.ndarray], dict]:
        """Every layer for one stimulus set (columns ``nsd_id``, ``caption``)."""
        r, e = self.reader, self.entry
        opts = {"layers": self.layers, "pool": self.pool, "dtype": self.dtype, "name": e.name}
        if r.kind == "images":
            images = StimulusImages(stimuli_hdf5, stimuli["nsd_id"].to_numpy())
            names, layers = extract_vision(r.model, images, self.device, batch_size, transform=r.transform,
                                           forward=r.forward, targets=r.targets, **opts)
        elif r.kind == "tokens":
            names, layers = extract_tokens(r, stimuli["caption"].tolist(), self.device, batch_size, **opts)
        elif r.kind == "captions":
            names, layers = extract_language(r.tokenizer, r.model, stimuli["caption"].tolist(), self.device,
                                             batch_size, prompt=r.prompt, **opts)
        else:
            images = StimulusImages(stimuli_hdf5, stimuli["nsd_id"].to_numpy())
            names, layers = r.extract_fn(r, images, stimuli["caption"].tolist(), self.device, batch_size, **opts)
        meta = {"modality": e.modality, "source": e.source, "architecture": e.architecture,
                "weights": e.weights, "trained": e.trained, "device": self.device,
                "pool": self.pool, "dtype": self.dtype or "default", "layers": self.layers or "default"}
        return names, layers, meta


def extract_tokens(reader: Reader, captions, device: str, batch_size: int, *, layers=None, pool: str = "last",
                   dtype: str | None = None, name: str = "model") -> tuple[list[str], list[np.ndarray]]:
    """Text towers with their own tokenizer function (open_clip): ``reader.tokenizer(captions) ->
    (tokens, mask)``; layers read through hooks, pooled at the last real token by default."""
    import torch

    model = reader.model.to(device)
    cast = torch_dtype(dtype)
    if cast is not None:
        model = model.to(cast)
    targets = select_layers(model, layers, name) if layers else reader.targets

    def batches():
        for start in range(0, len(captions), batch_size):
            tokens, mask = reader.tokenizer(captions[start : start + batch_size])
            yield tokens.to(device), mask.to(device)

    autocast = cast is None and device.startswith("cuda")

    def run(m, t):
        with torch.autocast("cuda", enabled=autocast):
            reader.forward(m, t)

    return run_layers(model, targets, batches(), len(captions), run, pool=pool, what="captions", name=name)


def build_timm(entry: ModelEntry) -> Reader:
    return Reader(build_vision_model(entry), "images")


def build_transformers_language(entry: ModelEntry) -> Reader:
    """A transformers language model (the paper's prompt, last token); for a CLIP/SigLIP pair its text tower
    over the bare captions (no prompt: its own tokenizer and context)."""
    tokenizer, model = build_language_model(entry)
    if hasattr(model, "text_model"):
        return Reader(model.text_model.eval(), "captions", tokenizer=tokenizer, pool="last", prompt=False)
    return Reader(model, "captions", tokenizer=tokenizer, pool="last")


#: (modality, source) -> the function building its Reader
BUILDERS = {
    ("vision", "timm"): build_timm,
    ("vision", "torchvision"): build_torchvision,
    ("vision", "python"): build_python,
    ("vision", "transformers"): build_transformers_vision,
    ("vision", "open_clip"): build_open_clip,
    ("language", "transformers"): build_transformers_language,
    ("language", "open_clip"): build_open_clip,
}


def build_vlm(entry: ModelEntry) -> Reader:
    """An image-text-to-text model (LLaVA-, Qwen2-VL-style): see :mod:`brainalign.models.vlm`."""
    from brainalign.models.vlm import build_vlm as build

    return build(entry)


BUILDERS[("vision", "vlm")] = build_vlm
BUILDERS[("language", "vlm")] = build_vlm


def build_reader(entry: ModelEntry) -> Reader:
    """The loaded model of ``entry``, ready to extract (see :data:`BUILDERS`)."""
    builder = BUILDERS.get((entry.modality, entry.source))
    if builder is None:
        raise InputError(f"model {entry.name!r}: source {entry.source!r} gives no {entry.modality} model here")
    return builder(entry)


def load_model(entry: ModelEntry, device: str) -> LoadedModel:
    """Load ``entry`` once for extraction on ``device`` (cpu, cuda, auto)."""
    return LoadedModel(entry, device)


def extract_model(entry: ModelEntry, stimuli: pd.DataFrame, stimuli_hdf5: Path, device: str,  # noqa: F821
                  batch_size: int = 32) -> tuple[list[str], list[np.ndarray], dict]:
    """Every layer of one registry model for one stimulus set (columns nsd_id, caption)."""
    return load_model(entry, device).extract(stimuli, stimuli_hdf5, batch_size)
