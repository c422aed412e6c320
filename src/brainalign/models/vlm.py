"""Layer features of image-text-to-text models (LLaVA-, Qwen2-VL-style vision-language models).

Each stimulus is given to the model as the paper's prompt with its caption PLUS its image: one user
message ``[image, text]`` through the processor's chat template (``add_generation_prompt``; templates
printing today's date get :data:`brainalign.models.features.FIXED_DATE`), or, for processors without a chat
template, the plain template with the processor's image token before the prompt. Prompts are batched
with left padding.

Default layers: every hidden state of the LANGUAGE model (``embeddings``, ``layer.1`` ... as
:func:`brainalign.models.features.extract_language`), at the last real token. Registry keys: ``layers``
(module names or globs, read through forward hooks instead), ``pool`` (``last``, ``mean`` over the
real tokens, ``cls`` the first real token), ``dtype`` (``float16``, ``bfloat16``, ``float32``; default
fp32 on CPU, fp16 on CUDA). Files come from local paths or the local Hugging Face cache only.
"""

from __future__ import annotations

import inspect

import numpy as np

from brainalign.io import InputError, Progress
from brainalign.models import features
from brainalign.models.registry import ModelEntry


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def build_vlm(entry: ModelEntry) -> features.Reader:
    """The image-text-to-text model of ``entry`` (``AutoModelForImageTextToText``) and its ``AutoProcessor``,
    from local files only; random init from the config (seeded) when ``weights: random``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    src, kwargs, random_init = features._hf_files(entry)
    remote = {"trust_remote_code": True} if entry.trust_remote_code else {}
    what = f"model {entry.name!r}: {src}"
    try:
        processor = AutoProcessor.from_pretrained(src, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{what}: no image-text-to-text processor there ({_first_line(exc)})") from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise InputError(f"{what}: not an image-text-to-text model (its processor "
                         f"{type(processor).__name__} has no image processor and tokenizer)")
    try:
        if random_init:
            features._seeded(entry)
            config = AutoConfig.from_pretrained(src, **kwargs)
            model = AutoModelForImageTextToText.from_config(config, **remote)
        else:
            dtype = features.torch_dtype(entry.extra.get("dtype")) or (
                torch.float16 if torch.cuda.is_available() else torch.float32)
            # models needing several GPUs (registry `gpus` > 1) are spread over them
            spread = {"device_map": "auto"} if entry.gpus > 1 and torch.cuda.device_count() > 1 else {}
            model, info = AutoModelForImageTextToText.from_pretrained(src, dtype=dtype, output_loading_info=True,
                                                                      **spread, **kwargs)
            absent = sorted(info.get("missing_keys", ())) + sorted(info.get("mismatched_keys", ()))
            if absent:  # transformers would initialise these at random with a warning only
                raise InputError(f"{what}: weights lack {len(absent)} tensors of the architecture (e.g. "
                                 f"{absent[0]}): they are for another model; fix the registry")
    except InputError:
        raise
    except ValueError as exc:  # a config no image-text-to-text class is registered for
        raise InputError(f"{what}: not an image-text-to-text model ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - missing or corrupt files raise many types
        raise InputError(f"{what}: the model does not load ({_first_line(exc)})") from None
    return features.Reader(model.eval(), "vlm", tokenizer=processor, pool="last", extract_fn=extract_vlm)


def _chat_template(processor):
    """The processor's chat template as a string, made deterministic (None: it has none)."""
    template = getattr(processor, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()), None)
    return features.deterministic_template(template) if isinstance(template, str) and template else None


def image_token(processor) -> str:
    """The token standing for the image in a prompt (processor's, else tokenizer's; ``<image>``)."""
    for owner in (processor, getattr(processor, "tokenizer", None)):
        token = getattr(owner, "image_token", None)
        if isinstance(token, str) and token:
            return token
    return "<image>"


def render_vlm_prompt(processor, caption: str) -> str:
    """The paper's prompt for ``caption`` with the image, as the model's text input (see module docstring)."""
    message = features.PROMPT.format(caption=caption)
    template = _chat_template(processor)
    if template is None:
        return features.PLAIN_TEMPLATE.format(message=f"{image_token(processor)}\n{message}")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": message}]}]
    return processor.apply_chat_template(conversation, chat_template=template, add_generation_prompt=True,
                                         tokenize=False, date_string=features.FIXED_DATE)


def _call_extras(model) -> dict:
    """Forward arguments that save work where the model takes them: no KV cache, logits of one token."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    extras = {"use_cache": False, "logits_to_keep": 1}
    return {k: v for k, v in extras.items() if k in params}


def extract_vlm(reader: features.Reader, images, captions, device: str = "cpu", batch_size: int = 8, *,
                layers=None, pool: str = "last", dtype: str | None = None,
                name: str = "model") -> tuple[list[str], list[np.ndarray]]:
    """Layer features of ``reader``'s model for ``images`` (uint8 (H, W, 3), indexable by slices) each with
    its caption: ``(layer_names, [float32 (n, d)])``. See the module docstring for the defaults."""
    import torch

    model, processor = reader.model, reader.tokenizer
    if len(images) != len(captions):
        raise InputError(f"model {name!r}: {len(images)} images but {len(captions)} captions")
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cast = features.torch_dtype(dtype)
    if getattr(model, "hf_device_map", None):  # spread over several GPUs: inputs go to the first
        device = str(model.device)
    else:
        model = model.to(device)
        if cast is None:  # the default: fp16 on CUDA, fp32 on CPU (whatever dtype the weights were loaded in)
            cast = torch.float16 if device.startswith("cuda") else torch.float32
    if cast is not None:
        model = model.to(cast)
    run_dtype = cast or next(model.parameters()).dtype
    texts = [render_vlm_prompt(processor, c) for c in captions]
    bos = tokenizer.bos_token
    # the processor adds the tokenizer's special tokens unless the template already begins with BOS
    special = not (bos is not None and texts and texts[0].startswith(bos))
    extras = _call_extras(model)

    def batches():
        for start in range(0, len(texts), batch_size):
            # one list of images per prompt: the layout every processor takes (Idefics3, Gemma3 need it)
            ims = [[features._as_pil(im)] for im in images[start : start + batch_size]]
            enc = processor(images=ims, text=texts[start : start + batch_size], return_tensors="pt",
                            padding=True, add_special_tokens=special)
            enc = enc.to(device)
            for k, v in enc.items():
                if torch.is_tensor(v) and v.is_floating_point():
                    enc[k] = v.to(run_dtype)
            yield enc, enc["attention_mask"]

    def forward(m, enc):
        return m(**enc, **extras)

    if layers:
        targets = features.select_layers(model, layers, name)
        return features.run_layers(model, targets, batches(), len(texts), forward, pool=pool, what="stimuli",
                                   name=name)
    chunks: list[list] = []
    progress = Progress(len(texts), "features", "stimuli")
    with torch.inference_mode():
        for enc, mask in batches():
            states = model(**enc, **extras, output_hidden_states=True).hidden_states
            if not states:
                raise InputError(f"model {name!r}: {type(model).__name__} returns no hidden states; name the "
                                 "modules to read with the registry key 'layers'")
            if not chunks:
                chunks = [[] for _ in states]
            for i, h in enumerate(states):
                chunks[i].append(features.pool_output(h, False, pool, mask).float().cpu().numpy())
            progress.step(len(mask))
    names = ["embeddings"] + [f"layer.{i}" for i in range(1, len(chunks))]
    return names, [np.concatenate(c) for c in chunks]
