"""Tests of brainalign.models.features: pooling, layer extraction, prompts, weights, storage.

Vision models are timm models with random init (smallest variants, a few small
random images); language models are the bundled MiniLM and a tiny random-init
GPT-NeoX. Everything runs offline on CPU.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brainalign.io import InputError
from brainalign.models.features import (
    PLAIN_TEMPLATE,
    PROMPT,
    block_container,
    build_language_model,
    build_vision_model,
    extract_language,
    extract_vision,
    pool_output,
    read_features,
    render_prompt,
    vision_transform,
    write_features,
)
from brainalign.models.registry import ModelEntry, load_registry, weights_path

REGISTRY_PATH = Path(__file__).resolve().parents[1] / "config" / "models.yaml"
SPEC_PROMPT = "Consider the image described by the following sentences: \n\n'{caption}'"


@pytest.fixture(scope="module")
def registry():
    return load_registry(REGISTRY_PATH)


@pytest.fixture(scope="module")
def images():
    """Three distinct random uint8 RGB images (the model transform resizes them)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- pooling


def test_pool_nchw_means_over_h_w():
    # (N=2, C=3, H=2, W=2); channel c of image n holds 4 known values
    x = torch.tensor(
        [
            [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 8.0]], [[-1.0, 1.0], [-1.0, 1.0]]],
            [[[10.0, 10.0], [10.0, 10.0]], [[1.0, 2.0], [3.0, 6.0]], [[4.0, 0.0], [0.0, 0.0]]],
        ]
    )
    expected = torch.tensor([[2.5, 2.0, 0.0], [10.0, 3.0, 1.0]])
    out = pool_output(x, channels_last=False)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, expected)
    # a channels_last memory format does not change the logical layout, nor the result
    torch.testing.assert_close(pool_output(x.contiguous(memory_format=torch.channels_last), False), expected)


def test_pool_nhwc_means_over_axes_1_2():
    # (N=1, H=2, W=3, C=2): channel 0 = 0..5, channel 1 = 10 * (0..5)
    base = torch.arange(6.0).reshape(1, 2, 3)
    x = torch.stack([base, 10 * base], dim=-1)
    assert x.shape == (1, 2, 3, 2)
    out = pool_output(x, channels_last=True)
    assert out.shape == (1, 2)
    torch.testing.assert_close(out, torch.tensor([[2.5, 25.0]]))
    # the NCHW rule on the same tensor would average something else
    assert pool_output(x, channels_last=False).shape == (1, 2)
    assert not torch.allclose(pool_output(x, channels_last=False), out)


def test_pool_tokens_mean_over_all_tokens():
    # (N=2, T=3, C=2); token 0 (CLS) is included in the mean
    x = torch.tensor([[[3.0, 0.0], [0.0, 3.0], [0.0, 0.0]], [[1.0, 1.0], [2.0, 2.0], [6.0, -3.0]]])
    expected = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    torch.testing.assert_close(pool_output(x, channels_last=False), expected)
    torch.testing.assert_close(pool_output(x, channels_last=True), expected)


def test_pool_2d_passthrough_and_tuple_first_element():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert pool_output(x, channels_last=False) is x
    assert pool_output(x, channels_last=True) is x
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    other = torch.full((1, 9, 9), 99.0)
    torch.testing.assert_close(pool_output((tokens, other), False), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(pool_output([x, other], False), x)


def test_pool_rejects_other_ranks():
    with pytest.raises(ValueError):
        pool_output(torch.zeros(2, 3, 4, 5, 6), False)


# ----------------------------------------------------------------------------- vision


def _timm_model(name: str):
    import timm

    if not timm.is_model(name):
        pytest.skip(f"timm {timm.__version__} has no architecture {name!r}")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


def _extract_with_raw(model, images, **kwargs):
    """extract_vision, plus the raw output of every block recorded by our own hooks."""
    _, blocks = block_container(model)
    raw: list = [None] * len(blocks)

    def hook(i):
        def fn(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            raw[i] = out.detach().float().clone()
        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        names, layers = extract_vision(model, images, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return names, layers, raw


def _check_common(names, layers, prefix, n_layers, widths, n_images=3):
    assert names == [f"{prefix}.{i}" for i in range(n_layers)]
    assert len(layers) == n_layers
    assert [a.shape for a in layers] == [(n_images, w) for w in widths]
    for a in layers:
        assert a.dtype == np.float32
        assert np.isfinite(a).all()
        # one row per image, not one broadcast vector
        assert not np.allclose(a[0], a[1])


def test_cnn_nchw_efficientnet_lite(images):
    model = _timm_model("tf_efficientnet_lite0")
    assert getattr(model, "output_fmt", "NCHW") != "NHWC"
    path, blocks = block_container(model)
    assert path == "blocks"
    assert len(blocks) == len(list(model.blocks.children())) == 7
    # stage widths of EfficientNet-B0/Lite0 = out channels of each stage's last convolution
    widths = [16, 24, 40, 80, 112, 192, 320]
    last_conv = [[m for m in stage.modules() if isinstance(m, torch.nn.Conv2d)][-1] for stage in model.blocks]
    assert [c.out_channels for c in last_conv] == widths

    names, layers, raw = _extract_with_raw(model, images)
    _check_common(names, layers, "blocks", 7, widths)
    for i, r in enumerate(raw):
        assert r.ndim == 4 and r.shape[:2] == (3, widths[i])  # NCHW
        np.testing.assert_allclose(layers[i], r.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5)

    # batching does not change the features (eval-mode BatchNorm)
    names2, layers2 = extract_vision(model, images, batch_size=2)
    assert names2 == names
    for a, b in zip(layers, layers2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_convnext_stages(images):
    model = _timm_model("convnext_atto")
    widths = [40, 80, 160, 320]
    assert len(list(model.stages.children())) == 4
    names, layers, raw = _extract_with_raw(model, images)
    _check_common(names, layers, "stages", 4, widths)
    for i, r in enumerate(raw):
        assert r.ndim == 4 and r.shape[1] == widths[i]
        np.testing.assert_allclose(layers[i], r.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5)


def test_vit_one_layer_per_block_tokens_mean(images):
    model = _timm_model("vit_tiny_patch16_224")
    n_blocks = len(model.blocks)
    assert n_blocks == 12 and model.embed_dim == 192
    names, layers, raw = _extract_with_raw(model, images)
    _check_common(names, layers, "blocks", n_blocks, [model.embed_dim] * n_blocks)
    for i, r in enumerate(raw):
        # (N, 1 CLS + 14*14 patches, C): pooled over every token, CLS included
        assert r.shape == (3, 197, 192)
        np.testing.assert_allclose(layers[i], r.mean(dim=1).numpy(), rtol=1e-5, atol=1e-5)


def test_hybrid_efficientformer_conv_then_token_stages(images):
    model = _timm_model("efficientformer_l1")
    widths = [48, 96, 224, 448]
    assert len(list(model.stages.children())) == 4
    names, layers, raw = _extract_with_raw(model, images)
    _check_common(names, layers, "stages", 4, widths)
    ndims = [r.ndim for r in raw]
    assert ndims[:3] == [4, 4, 4], ndims  # conv stages: NCHW
    assert ndims[3] == 3, ndims  # last stage: attention over tokens (N, T, C)
    for i, r in enumerate(raw):
        hand = r.mean(dim=(2, 3)) if r.ndim == 4 else r.mean(dim=1)
        np.testing.assert_allclose(layers[i], hand.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, widths",
    [("mambaout_femto", [48, 96, 192, 288]), ("swin_tiny_patch4_window7_224", [96, 192, 384, 768])],
)
def test_nhwc_models_pool_over_spatial_axes(images, name, widths):
    model = _timm_model(name)
    if getattr(model, "output_fmt", None) != "NHWC":
        pytest.skip(f"{name} is not an NHWC model in this timm")
    path, blocks = block_container(model)
    names, layers, raw = _extract_with_raw(model, images)
    _check_common(names, layers, path, len(blocks), widths)
    side = 224 // 4
    for i, r in enumerate(raw):
        s = side // 2**i
        assert r.shape == (3, s, s, widths[i])  # channels last
        np.testing.assert_allclose(layers[i], r.mean(dim=(1, 2)).numpy(), rtol=1e-5, atol=1e-5)


def test_block_container_error_names_candidates():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="no block container"):
        block_container(model)


# ----------------------------------------------------------------------------- language


def _tiny_tokenizer():
    """A byte-level tokenizer built in code: 256 byte tokens + eos, no pad, no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def minilm(registry):
    tok, model = build_language_model(registry["all-MiniLM-L6-v2"])
    return tok, model


def _last_token_states(tok, model, prompt):
    enc = tok([prompt], return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc, output_hidden_states=True)
    return [h[0, -1].float().numpy() for h in out.hidden_states]


def test_prompt_constant_is_spec():
    assert PROMPT == SPEC_PROMPT


def test_render_prompt_plain_without_chat_template(minilm):
    tok, _ = minilm
    assert not getattr(tok, "chat_template", None)
    caption = "A cat sleeps on a red sofa."
    message = SPEC_PROMPT.format(caption=caption)
    expected = PLAIN_TEMPLATE.format(message=message)
    assert render_prompt(tok, caption) == expected
    assert expected == f"<user>: {message}\n<assistant>: "
    assert render_prompt(_tiny_tokenizer(), caption) == expected


def test_render_prompt_uses_chat_template_with_generation_prompt():
    tok = _tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    caption = "Two dogs play in the snow."
    message = SPEC_PROMPT.format(caption=caption)
    got = render_prompt(tok, caption)
    assert got == f"<|user|>{message}<|end|><|assistant|>"
    assert got == tok.apply_chat_template(
        [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
    )
    assert not got.startswith("<user>: ")


def test_minilm_all_layers_last_token(minilm):
    tok, model = minilm
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    caption = "A man rides a horse on the beach."
    names, layers = extract_language(tok, model, [caption])
    assert names == ["embeddings"] + [f"layer.{i}" for i in range(1, 7)]
    assert len(layers) == model.config.num_hidden_layers + 1 == 7
    assert [a.shape for a in layers] == [(1, 384)] * 7
    assert all(a.dtype == np.float32 for a in layers)
    # the hidden state of the last token of the rendered prompt, by hand
    hand = _last_token_states(tok, model, render_prompt(tok, caption))
    for a, h in zip(layers, hand, strict=True):
        np.testing.assert_allclose(a[0], h, atol=1e-5)


LONG_CAPTION = (
    "A crowded city street at dusk with many people walking past brightly lit shop windows, "
    "several yellow taxis waiting at a traffic light, a cyclist in a red jacket, tall buildings "
    "with glowing windows, street vendors selling food from carts, and pigeons on the pavement."
)


def test_minilm_longest_caption_unaffected_by_batch(minilm):
    tok, model = minilm
    _, alone = extract_language(tok, model, [LONG_CAPTION])
    _, batch = extract_language(tok, model, ["A cat.", LONG_CAPTION])
    for a, b in zip(alone, batch, strict=True):
        np.testing.assert_allclose(a[0], b[1], atol=1e-4)


def test_minilm_left_padding_same_features_alone_and_in_batch(minilm):
    tok, model = minilm
    _, alone = extract_language(tok, model, ["A cat."])
    _, batch = extract_language(tok, model, ["A cat.", LONG_CAPTION])
    for a, b in zip(alone, batch, strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=1e-4)


def test_minilm_prompts_batched_by_length_come_back_in_input_order(minilm):
    """Batches group prompts of similar length; row i of every layer is still caption i's."""
    tok, model = minilm
    captions = [LONG_CAPTION, "A cat.", "Two dogs on a beach.", LONG_CAPTION + " And a bird.", "A bus.",
                "A plate of food on a wooden table with a fork."]
    _, batched = extract_language(tok, model, captions, batch_size=2)
    for i, caption in enumerate(captions):
        _, alone = extract_language(tok, model, [caption])
        for a, b in zip(alone, batched, strict=True):
            np.testing.assert_allclose(b[i], a[0], atol=1e-4)


@pytest.fixture(scope="module")
def tiny_neox():
    from transformers import GPTNeoXConfig, GPTNeoXModel

    tok = _tiny_tokenizer()
    cfg = GPTNeoXConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    return tok, GPTNeoXModel(cfg).eval()


def test_tiny_gpt_neox_layers_and_width(tiny_neox):
    tok, model = tiny_neox
    assert tok.pad_token is None
    captions = ["A red bus.", "A bowl of fruit on a wooden table next to a window."]
    names, layers = extract_language(tok, model, captions)
    n = model.config.num_hidden_layers + 1
    assert names == ["embeddings", "layer.1", "layer.2"]
    assert len(layers) == n == 3
    assert [a.shape for a in layers] == [(2, 32)] * n
    assert tok.pad_token == tok.eos_token  # no pad token: eos pads (on the left)
    assert tok.padding_side == "left"
    # the padded short caption equals its unpadded run (rotary positions are relative)
    for i, caption in enumerate(captions):
        hand = _last_token_states(tok, model, render_prompt(tok, caption))
        for a, h in zip(layers, hand, strict=True):
            np.testing.assert_allclose(a[i], h, atol=1e-4)


def test_tiny_gpt_neox_goes_through_chat_template(tiny_neox):
    tok, model = tiny_neox
    tok = copy.deepcopy(tok)
    tok.chat_template = CHAT_TEMPLATE
    caption = "A red bus."
    _, layers = extract_language(tok, model, [caption])
    chat = tok.apply_chat_template(
        [{"role": "user", "content": SPEC_PROMPT.format(caption=caption)}], tokenize=False,
        add_generation_prompt=True,
    )
    hand = _last_token_states(tok, model, chat)
    for a, h in zip(layers, hand, strict=True):
        np.testing.assert_allclose(a[0], h, atol=1e-5)
    plain = _last_token_states(tok, model, PLAIN_TEMPLATE.format(message=SPEC_PROMPT.format(caption=caption)))
    assert not np.allclose(layers[-1][0], plain[-1], atol=1e-4)


# ----------------------------------------------------------------------------- real weights


def _top1(model, arrays):
    from PIL import Image

    transform = vision_transform(model)
    x = torch.stack([transform(Image.fromarray(a)) for a in arrays])
    with torch.inference_mode():
        return model(x).argmax(dim=-1).tolist()


CAT_CLASSES = {281, 282, 283, 284, 285}
COFFEE_CLASSES = {967, 968}


def test_efficientnet_lite0_weights_classify(registry):
    import skimage.data

    entry = registry["tf_efficientnet_lite0"]
    assert entry.trained and weights_path(entry).exists()
    model = build_vision_model(entry)
    assert not model.training
    cat, coffee = _top1(model, [skimage.data.chelsea(), skimage.data.coffee()])
    assert cat in CAT_CLASSES, cat
    assert coffee in COFFEE_CLASSES, coffee

    untrained = registry["tf_efficientnet_lite0.untrained"]
    assert not untrained.trained and weights_path(untrained) is None
    cat_r, coffee_r = _top1(build_vision_model(untrained), [skimage.data.chelsea(), skimage.data.coffee()])
    assert not (cat_r in CAT_CLASSES and coffee_r in COFFEE_CLASSES)


# ----------------------------------------------------------------------------- storage


def test_write_read_features_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    ids = np.array([5, 17, 73000, 2], dtype=np.int64)
    names = ["blocks.0", "blocks.1", "head"]
    layers = [
        rng.normal(size=(4, 8)).astype(np.float32),
        (rng.normal(size=(4, 3)) * 1000).astype(np.float32),
        (rng.normal(size=(4, 5)) * 1e-3).astype(np.float32),
    ]
    meta = {"modality": "vision", "source": "timm", "weights": "random", "trained": False,
            "device": "cpu", "benchmark": None}
    path = tmp_path / "sub" / "features.h5"
    write_features(path, "my_model", ids, names, layers, meta)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["features.h5"]  # no temporary file left

    got_names, got_layers, got_meta = read_features(path, expected_ids=ids)
    assert got_names == names
    assert got_meta == meta
    assert [a.shape for a in got_layers] == [a.shape for a in layers]
    for got, orig in zip(got_layers, layers, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, orig.astype(np.float16).astype(np.float32))
        # float16 rounding: half an ulp (relative 2**-11; absolute 2**-25 among subnormals)
        np.testing.assert_allclose(got, orig, rtol=2.0**-11, atol=2.0**-25)

    import h5py

    with h5py.File(path, "r") as f:
        assert f.attrs["model"] == "my_model"
        assert all(f[f"layers/{i:03d}"].dtype == np.float16 for i in range(3))
        np.testing.assert_array_equal(f["stimulus_ids"][()], ids)

    # without expected ids: no check
    assert read_features(path)[0] == names


def test_read_features_wrong_ids(tmp_path):
    ids = np.array([1, 2, 3])
    path = tmp_path / "f.h5"
    write_features(path, "m", ids, ["a"], [np.ones((3, 2), np.float32)], {})
    with pytest.raises(InputError, match="stimulus ids differ"):
        read_features(path, expected_ids=np.array([1, 2, 4]))
    with pytest.raises(InputError):
        read_features(path, expected_ids=np.array([1, 2]))
    with pytest.raises(InputError):
        read_features(path, expected_ids=np.array([3, 2, 1]))


def test_missing_weights_path_names_model():
    entry = ModelEntry(name="my_missing_model", modality="vision", source="timm",
                       architecture="tf_efficientnet_lite0", weights="/nonexistent/x.pth")
    with pytest.raises(InputError, match="my_missing_model") as exc:
        build_vision_model(entry)
    assert "/nonexistent/x.pth" in str(exc.value)
    lang = ModelEntry(name="my_missing_lm", modality="language", source="transformers",
                      architecture="/nonexistent/arch", weights="/nonexistent/lm")
    with pytest.raises(InputError, match="my_missing_lm"):
        build_language_model(lang)


def test_corrupt_or_foreign_weights_fail_naming_the_file(tmp_path, registry):
    """A truncated weights file, or weights of another architecture, is one line naming the file
    (never a model silently left at random init)."""
    import timm
    import torch

    good = weights_path(registry["tf_efficientnet_lite0"])
    truncated = tmp_path / "lite0.pth"
    truncated.write_bytes(good.read_bytes()[: 1 << 16])
    foreign = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), foreign)
    for path, named in [(truncated, r"unreadable \(\w+\); the file is corrupt or truncated"),
                        (foreign, "another architecture than 'tf_efficientnet_lite0'")]:
        entry = ModelEntry(name="mine", modality="vision", source="timm",
                           architecture="tf_efficientnet_lite0", weights=str(path))
        with pytest.raises(InputError, match=f"{path}: .*{named}") as exc:
            build_vision_model(entry)
        assert "\n" not in str(exc.value)

    lm = weights_path(registry["all-MiniLM-L6-v2"])
    bad = tmp_path / "lm"
    shutil.copytree(lm, bad)
    (bad / "model.safetensors").write_bytes((lm / "model.safetensors").read_bytes()[:4096])
    entry = ModelEntry(name="my_lm", modality="language", source="transformers", architecture=str(bad),
                       weights=str(bad))
    with pytest.raises(InputError, match=f"{bad}: weights of model 'my_lm' do not load"):
        build_language_model(entry)
    from safetensors.torch import load_file, save_file

    state = load_file(lm / "model.safetensors")
    save_file({k: v for k, v in state.items() if ".layer.5." not in k}, bad / "model.safetensors")
    with pytest.raises(InputError, match=r"lack 16 tensors of the architecture \(e\.g\. .*layer\.5\."):
        build_language_model(entry)


def test_hub_weights_missing_from_the_local_cache_name_model_and_cache(tmp_path, monkeypatch):
    """Offline by default: a model not in the local Hugging Face cache fails at once, naming both."""
    from brainalign.models.features import build_language_model, build_vision_model
    from brainalign.models.registry import ModelEntry

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    vision = ModelEntry("convnext_atto.d2_in1k", "vision", "timm", "convnext_atto.d2_in1k", "timm-hub")
    with pytest.raises(InputError, match=r"convnext_atto\.d2_in1k.*" + str(tmp_path / "hub")):
        build_vision_model(vision)
    lang = ModelEntry("EleutherAI/pythia-70m-deduped@step1000", "language", "transformers",
                      "EleutherAI/pythia-70m-deduped", "hf-hub", extra={"revision": "step1000"})
    with pytest.raises(InputError, match=r"pythia-70m-deduped@step1000.*not in the local Hugging Face cache"):
        build_language_model(lang)


def test_chat_templates_that_print_today_are_made_deterministic(minilm):
    """A Llama-3-style template puts today's date in the prompt; ours puts a fixed date."""
    from brainalign.models.features import FIXED_DATE, render_prompt

    tok, _ = minilm
    tok = copy.deepcopy(tok)
    tok.chat_template = (
        "{%- set date_string = strftime_now('%d %b %Y') %}Today Date: {{ date_string }}\n"
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    prompt = render_prompt(tok, "a cat")
    assert f"Today Date: {FIXED_DATE}" in prompt
    assert prompt.endswith("<assistant>") and "a cat" in prompt


def test_training_checkpoints_become_one_model_per_epoch_with_ema_weights(tmp_path):
    """A registry entry with `checkpoints: <dir>` expands to one model per epoch file; the EMA
    weights of a timm checkpoint are the ones loaded."""
    import timm
    import torch
    import yaml

    from brainalign.models.registry import load_registry

    run_dir = tmp_path / "mixnet_run"
    run_dir.mkdir()
    emas = {}
    for epoch in (0, 3, 12):
        torch.manual_seed(epoch)
        model = timm.create_model("mixnet_s", pretrained=False)
        ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        torch.save({"epoch": epoch, "state_dict": model.state_dict(), "state_dict_ema": ema},
                   run_dir / f"checkpoint-{epoch}.pth.tar")
        emas[epoch] = ema
    (run_dir / "last.pth.tar").write_bytes(b"")  # not an epoch file: ignored
    reg_file = tmp_path / "reg.yaml"
    reg_file.write_text(yaml.safe_dump({"mixnet_s.run1": {
        "modality": "vision", "source": "timm", "architecture": "mixnet_s", "checkpoints": str(run_dir)}}))
    reg = load_registry(reg_file)
    assert list(reg) == ["mixnet_s.run1@epoch0", "mixnet_s.run1@epoch3", "mixnet_s.run1@epoch12"]
    assert reg["mixnet_s.run1@epoch3"].extra["epoch"] == 3
    built = build_vision_model(reg["mixnet_s.run1@epoch12"])
    key = "conv_stem.weight"
    torch.testing.assert_close(built.state_dict()[key], emas[12][key])
    with pytest.raises(InputError, match="checkpoint directory"):
        reg_file.write_text(yaml.safe_dump({"x": {"modality": "vision", "source": "timm", "architecture": "mixnet_s",
                                                  "checkpoints": str(tmp_path / "nope")}}))
        load_registry(reg_file)


def test_nan_or_inf_features_fail_naming_the_model_and_layers(tmp_path, monkeypatch):
    """An fp16 overflow (inf, then NaN) must not reach the tables as numbers."""
    import pandas as pd

    import brainalign.models.features as feats
    from brainalign import pipeline

    class Broken:
        def extract(self, stimuli, images, batch_size):
            good = np.ones((len(stimuli), 4), np.float32)
            return ["blocks.0", "blocks.1"], [good, np.where(np.arange(4) == 2, np.inf, good)], {}

    monkeypatch.setattr(feats, "load_model", lambda entry, device: Broken())
    csv = tmp_path / "subj01.csv"
    pd.DataFrame({"nsd_id": [1, 2, 3], "caption": ["a", "b", "c"]}).to_csv(csv, index=False)
    out = tmp_path / "f.h5"
    with pytest.raises(InputError, match=r"tf_efficientnet_lite0: layers \['blocks.1'\] \(1 of 2\) give NaN or inf"):
        pipeline.extract(REGISTRY_PATH, "tf_efficientnet_lite0", [csv], tmp_path / "x.hdf5", "cpu",
                         [out])
    assert not out.exists()
