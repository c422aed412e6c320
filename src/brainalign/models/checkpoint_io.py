"""Model weights from a checkpoint file, loaded without running code from it.

``*.safetensors`` files hold tensors only. Every other file is a pickle, read with
``torch.load(weights_only=True)``: only tensors, containers and plain values, plus the
classes in :data:`CHECKPOINT_SAFE_GLOBALS`, are rebuilt; a pickle naming anything else is
refused, never loaded with ``weights_only=False``.

The weights are the checkpoint's ``state_dict_ema`` (timm's EMA weights, what timm's
validate.py uses with ``--use-ema``), else ``state_dict``, else ``model`` (other trainers),
else the file's dict itself when it maps names to tensors.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

from brainalign.io import InputError

# Classes a training checkpoint may hold besides tensors, containers and plain values.
# A file written by timm.utils.CheckpointSaver (timm 1.0.31, as train.py saves it, with
# --model-ema, --checkpoint-hist, SGD/AdamW/timm optimizers, NativeScaler) holds
# {epoch, arch, version, metric, saver, optimizer, amp_scaler, args, state_dict,
# state_dict_ema}; of these only ``args`` is an object that torch's safe loader refuses by
# default: the argparse.Namespace of train.py's arguments (its values are str, int, float,
# bool, None, lists and dicts; train.py writes no pathlib paths into it). Building a
# Namespace sets attributes only, so it cannot run code.
CHECKPOINT_SAFE_GLOBALS = (argparse.Namespace,)

WEIGHT_KEYS = ("state_dict_ema", "state_dict", "model")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_state(path, name: str) -> dict:
    """The model weights (a flat {tensor name: torch.Tensor} state dict) stored in `path` for registry model `name`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights of model {name!r} not found: fix the path or download the weights")
    state = _read(path, name)
    weights = _weights(state)
    if weights is None:
        raise InputError(f"{path}: the file of model {name!r} is a checkpoint without model weights "
                         f"({_describe(state)}): use a state dict, or a checkpoint with one of "
                         f"{', '.join(WEIGHT_KEYS)}")
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    return weights


def _read(path: Path, name: str):
    """The object stored in ``path``: tensors from safetensors, else a pickle read with weights_only."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        # only those not allowed already: leaving the context removes its globals, even ones a library
        # had allowed for itself before
        allowed = torch.serialization.get_safe_globals()
        with torch.serialization.safe_globals([g for g in CHECKPOINT_SAFE_GLOBALS if g not in allowed]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise InputError(f"{path}: the checkpoint of model {name!r} holds {_refused(exc, path)} outside the "
                             "allow-list of checkpoint contents; not loaded, since unpickling it could run code: "
                             "save the weights alone (torch.save(model.state_dict())) or as safetensors") from None
        raise _unreadable(path, name, exc) from None
    except Exception as exc:  # noqa: BLE001 - zipfile, pickle and safetensors raise several types
        raise _unreadable(path, name, exc) from None


def _unreadable(path: Path, name: str, exc: Exception) -> InputError:
    """The error for a file that is not a whole checkpoint."""
    return InputError(f"{path}: weights of model {name!r} unreadable ({type(exc).__name__}); "
                      "the file is corrupt or truncated: download or copy it again")


def _refused(exc: Exception, path: Path) -> str:
    """What torch's safe loader refused: the pickled global it names, or the file's unsafe globals."""
    found = [m.rstrip(".") for m in _GLOBAL.findall(str(exc))]
    if not found:
        import torch

        try:
            allowed = {f"{c.__module__}.{c.__qualname__}" for c in CHECKPOINT_SAFE_GLOBALS}
            found = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if g not in allowed]
        except Exception:  # noqa: BLE001 - not a torch.save zip file: name nothing
            found = []
    if not found:
        return "pickled Python content"
    kind = "type" if len(found) == 1 else "types"
    return f"a Python object of {kind} {', '.join(dict.fromkeys(found))}"


def _weights(state) -> dict | None:
    """The flat tensor mapping in a loaded checkpoint, by :data:`WEIGHT_KEYS`; None if there is none."""
    if not isinstance(state, dict):
        return None
    for key in WEIGHT_KEYS:
        if _is_flat(state.get(key)):
            return dict(state[key])
    return dict(state) if _is_flat(state) else None


def _is_flat(obj) -> bool:
    """Whether ``obj`` is a non-empty mapping of str -> torch.Tensor."""
    import torch

    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _describe(state) -> str:
    """What a checkpoint without weights holds, on one line."""
    if not isinstance(state, dict):
        size = f" of {len(state)} items" if isinstance(state, list | tuple) else ""
        return f"a {type(state).__name__}{size}, not a dict"
    keys = [repr(k) for k in list(state)[:10]] + (["..."] if len(state) > 10 else [])
    return f"keys: {', '.join(keys) or 'none'}"
