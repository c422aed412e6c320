"""load_state: weights from timm training checkpoints, state dicts and safetensors, never by running pickled code."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from brainalign.io import InputError
from brainalign.models.checkpoint_io import CHECKPOINT_SAFE_GLOBALS, load_state

EPOCHS = 3


class _Pwn:
    """A pickle that would run a shell command when loaded with weights_only=False."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def _assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, tensor in want.items():
        assert torch.equal(got[key], tensor), key


def _train(out: Path, optimizer: str, with_ema: bool) -> tuple[dict, dict]:
    """A tiny timm run saved by timm's CheckpointSaver; the weights each epoch's file should give, by epoch."""
    import timm
    from timm.utils import CheckpointSaver, ModelEmaV3

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=3)
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-2))
    ema = ModelEmaV3(model, decay=0.5) if with_ema else None
    args = argparse.Namespace(model="resnet10t", opt=optimizer, lr=0.1, input_size=[3, 32, 32], mean=None,
                              opt_kwargs={}, model_ema=with_ema, checkpoint_hist=EPOCHS, output="", device="cpu")
    out.mkdir()
    saver = CheckpointSaver(model, opt, args=args, model_ema=ema, checkpoint_dir=str(out), recovery_dir=str(out),
                            max_history=EPOCHS)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    expected, raw = {}, {}
    for epoch in range(EPOCHS):
        for _ in range(2):
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            if ema is not None:
                ema.update(model)
        saver.save_checkpoint(epoch, metric=float(epoch))
        source = ema.module if ema is not None else model
        expected[epoch] = {k: v.clone() for k, v in source.state_dict().items()}
        raw[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    return expected, raw


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An SGD run with EMA: (checkpoint dir, EMA weights by epoch, raw model weights by epoch)."""
    out = tmp_path_factory.mktemp("ckpt") / "sgd_ema"
    expected, raw = _train(out, "sgd", with_ema=True)
    return out, expected, raw


def test_checkpoint_saver_files_give_the_ema_weights(run):
    out, expected, raw = run
    for epoch in range(EPOCHS):
        path = out / f"checkpoint-{epoch}.pth.tar"
        assert path.is_file()
        state = load_state(path, "tiny")
        _assert_same(state, expected[epoch])
        # the EMA lags the raw model, so the EMA weights were really chosen
        assert any(not torch.equal(state[k], raw[epoch][k]) for k in state if state[k].is_floating_point())
    _assert_same(load_state(out / "last.pth.tar", "tiny"), expected[EPOCHS - 1])


def test_checkpoint_saver_file_holds_args_optimizer_and_metadata(run):
    """The file really is a full training checkpoint: the allow-list is what makes it load."""
    out, _, _ = run
    with torch.serialization.safe_globals(list(CHECKPOINT_SAFE_GLOBALS)):
        raw = torch.load(out / "checkpoint-1.pth.tar", map_location="cpu", weights_only=True)
    assert {"args", "optimizer", "epoch", "arch", "version", "metric", "state_dict", "state_dict_ema"} <= set(raw)
    assert isinstance(raw["args"], argparse.Namespace) and raw["epoch"] == 1
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(out / "checkpoint-1.pth.tar")) == [
        "argparse.Namespace"]


def test_checkpoint_without_ema_gives_state_dict(tmp_path):
    expected, _ = _train(tmp_path / "adamw", "adamw", with_ema=False)
    for epoch in range(EPOCHS):
        _assert_same(load_state(tmp_path / "adamw" / f"checkpoint-{epoch}.pth.tar", "tiny"), expected[epoch])


def test_global_allow_list_is_unchanged(run):
    """Loading neither adds to torch's global allow-list nor removes what a library put there itself."""
    original = list(torch.serialization.get_safe_globals())
    try:
        for already in (False, True):
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals([g for g in original if g is not argparse.Namespace]
                                                 + ([argparse.Namespace] if already else []))
            before = list(torch.serialization.get_safe_globals())
            load_state(run[0] / "checkpoint-0.pth.tar", "tiny")
            assert list(torch.serialization.get_safe_globals()) == before
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(original)


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": _Pwn(marker)}, path)
    with pytest.raises(InputError) as err:
        load_state(path, "evil")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'evil'" in msg
    assert f"of type {os.system.__module__}.system outside the allow-list of checkpoint contents" in msg
    assert "could run code" in msg and "safetensors" in msg
    assert "corrupt" not in msg
    assert not marker.exists()


def test_object_outside_allow_list_is_named(tmp_path):
    path = tmp_path / "paths.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(output=Path("/runs/x"))}, path)
    with pytest.raises(InputError, match="outside the allow-list") as err:
        load_state(path, "m")
    cls = type(Path("/runs/x"))
    assert f"of type {cls.__module__}.{cls.__qualname__} " in str(err.value)
    assert "corrupt" not in str(err.value)


@pytest.mark.parametrize("suffix", [".pth.tar", ".safetensors"])
def test_truncated_file_is_corrupt(run, tmp_path, suffix):
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        good = tmp_path / "good.safetensors"
        save_file(run[1][0], good)
    else:
        good = run[0] / "checkpoint-0.pth.tar"
    data = good.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:
        load_state(path, "tiny")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'tiny'" in msg
    assert "unreadable (" in msg and "corrupt or truncated" in msg and "download or copy it again" in msg


@pytest.mark.parametrize("content, found", [([1, 2, 3], "a list of 3 items"), ({"epoch": 3}, "keys: 'epoch'"),
                                            ({"state_dict": {}, "epoch": 3}, "keys: 'state_dict', 'epoch'")])
def test_checkpoint_without_weights(tmp_path, content, found):
    path = tmp_path / "meta.pth"
    torch.save(content, path)
    with pytest.raises(InputError) as err:
        load_state(path, "m")
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "'m'" in msg
    assert "is a checkpoint without model weights" in msg and found in msg
    assert "corrupt" not in msg


def test_module_prefix_is_stripped(tmp_path):
    weights = {"conv.weight": torch.randn(2, 2), "fc.bias": torch.randn(3)}
    path = tmp_path / "ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in weights.items()}, "epoch": 9}, path)
    _assert_same(load_state(path, "m"), weights)
    # a prefix on only some keys is a name, not a wrapper: kept
    mixed = {"module.a": torch.ones(1), "b": torch.zeros(1)}
    torch.save(mixed, path)
    _assert_same(load_state(path, "m"), mixed)


def test_plain_state_dict_and_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    weights = {"a.weight": torch.randn(3, 4), "a.bias": torch.arange(3.0), "n": torch.tensor(7)}
    save_file(weights, tmp_path / "w.safetensors")
    torch.save(weights, tmp_path / "w.pt")
    _assert_same(load_state(tmp_path / "w.safetensors", "m"), weights)
    _assert_same(load_state(str(tmp_path / "w.pt"), "m"), weights)


def test_missing_file_is_not_called_corrupt(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load_state(tmp_path / "nope.pth", "m")
    assert "corrupt" not in str(err.value)


def test_a_checkpoint_run_in_the_registry_is_one_model_per_epoch_with_the_ema_weights(run, tmp_path):
    """The registry's ``checkpoints:`` on the CheckpointSaver's directory: one model per epoch file
    (``last.pth.tar`` and ``model_best`` are not epochs), each built with that epoch's EMA weights."""
    import yaml

    from brainalign.models.features import build_vision_model
    from brainalign.models.registry import load_registry

    out, expected, _ = run
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"run": {"modality": "vision", "source": "timm", "architecture": "resnet10t",
                                                "num_classes": 3, "checkpoints": str(out)}}))
    entries = load_registry(registry)
    assert sorted(entries) == [f"run@epoch{e}" for e in range(EPOCHS)]
    for epoch in range(EPOCHS):
        model = build_vision_model(entries[f"run@epoch{epoch}"])
        _assert_same(model.state_dict(), expected[epoch])
