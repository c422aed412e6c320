"""Generate the paper's model registry files from the reference tables.

Developer tool, run once when the reference tables change (the workflow never
reads the reference directory; it reads the YAML files this writes)::

    python tools/make_registry.py [/path/to/shared/reference]   # default: ../shared/reference

Writes, under ``config/registry/`` (``--out`` to change):

``paper_vision.yaml``
    every timm model of ``timm_results/results-imagenet.csv`` (596 rows: the
    paper's 594 plus ``eca_nfnet_l0.ra2_in1k`` and ``eca_resnet33ts.ra2_in1k``,
    which the paper's figures do not show; they carry ``in_paper: false``).
    name = architecture = benchmark = the timm name with its pretrained tag
    (``convnext_atto.d2_in1k``), ``weights: timm-hub``.
``paper_language.yaml``
    the 43 language models of ``language_models.csv`` (name = architecture =
    benchmark = the HF id), ``weights: hf-hub``, ``gpus`` from the csv.
``pythia_checkpoints.yaml``
    Pythia-deduped 70m..2.8b (not 6.9b/12b: SPEC, training trajectories) at
    the 18 revisions of ``pythia_checkpoints.csv``: name
    ``EleutherAI/pythia-70m-deduped@step1000``, ``revision: step1000``,
    ``step``, ``tokens = step * 2,097,152`` (tokens per Pythia step).

Weights: ``timm-hub`` = timm's pretrained weights of that tag, ``hf-hub`` = the
HF model (at ``revision`` where given); both from the local Hugging Face cache,
offline (HF_HUB_OFFLINE=1) - download them there before running.

Extra keys (kept by ``load_registry`` in ``ModelEntry.extra``):

``family``
    vision: the architecture prefix (see :func:`vision_family`); language: the
    model series (see :func:`language_family`); Pythia: ``pythia-deduped``.
``params``
    parameter count in MILLIONS for every modality: timm ``param_count``;
    language ``#Params (B)`` x 1000 of ``src/brainalign/resources/language_benchmarks.csv``
    (the size in the model name where the leaderboard has none, with
    ``params_source: name``); Pythia the nominal size of the name (70m -> 70).
``arch``
    vision only: CNN / Transformer / Hybrid, the ``arch`` column of
    ``src/brainalign/resources/vision_benchmarks.csv``; where that is empty,
    :func:`vision_arch_heuristic` (``arch_source: heuristic``).
``in_paper``
    whether the paper's per-model scores (``src/brainalign/resources/paper_*_scores.csv``)
    hold the model.
``in_chatbot_arena`` (language), ``size``, ``revision``, ``step``, ``tokens`` (Pythia).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "src" / "brainalign" / "resources"
DEFAULT_REFERENCE = REPO.parent / "shared" / "reference"
DEFAULT_OUT = REPO / "config" / "registry"

TOKENS_PER_STEP = 2_097_152  # Pythia: 1024 sequences x 2048 tokens per optimiser step
PYTHIA_SIZES = ("70m", "160m", "410m", "1b", "1.4b", "2.8b")  # the paper's trajectories (no 6.9b, 12b)

# ----------------------------------------------------------------------------- vision

# Prefixes naming who ported the weights, not the architecture: tf_efficientnet -> efficientnet.
PORT_PREFIXES = ("tf_", "dm_", "tv_", "gluon_", "legacy_")
# Prefixes naming a variant of the next token: nf_regnet, eca_nfnet, tiny_vit, ...
MODIFIER_PREFIXES = ("nf", "eca", "ese", "gc", "tiny", "cs3se")
# Digit suffixes that name a version, not a depth: keep them (eva02 is not eva).
KEEP_DIGITS = {"eva02", "deit3", "cs3darknet", "cs3sedarknet", "cs3edgenet"}

TRANSFORMER_WORDS = ("vit", "deit", "beit", "eva", "cait", "swin", "xcit", "pvt", "flexivit", "gmlp", "resmlp",
                     "mixer", "davit", "focalnet", "gcvit", "mvit", "twins", "crossvit", "tnt")
HYBRID_WORDS = ("coat", "maxvit", "maxxvit", "levit", "efficientformer", "mobilevit", "fastvit", "edgenext",
                "efficientvit", "convit", "convformer", "caformer", "poolformer", "halonet", "botnet", "tiny_vit",
                "_r26_", "_r50_", "_r_s16")


def vision_family(timm_name: str) -> str:
    """The architecture prefix of a timm name, e.g. ``convnext_atto.d2_in1k`` -> ``convnext``.

    Rule: drop the pretrained tag (after ``.``) and a weight-port prefix
    (``tf_``, ``dm_``, ...); take the first ``_``-separated token, joined with
    the next one when it is a variant prefix (``nf_regnet``, ``eca_nfnet``,
    ``tiny_vit``); drop a trailing depth number unless it follows ``v``
    (``vgg19`` -> ``vgg``, ``densenet121`` -> ``densenet``, ``mobilenetv3``
    and ``eva02`` kept).
    """
    arch = timm_name.split(".", 1)[0]
    for prefix in PORT_PREFIXES:
        if arch.startswith(prefix):
            arch = arch[len(prefix):]
            break
    tokens = arch.split("_")
    head = tokens[0]
    if head in MODIFIER_PREFIXES and len(tokens) > 1:
        head = f"{head}_{tokens[1]}"
    if head not in KEEP_DIGITS:
        head = re.sub(r"(?<=[a-uw-z])\d+[a-z]{0,2}$", "", head) or head
    return head


def vision_arch_heuristic(timm_name: str, family: str, family_arch: dict[str, str]) -> str:
    """CNN / Transformer / Hybrid for a model the benchmark table gives no ``arch``.

    1. the most common ``arch`` of the table's models of the same family, or of
       the family without its variant prefix (``eca_nfnet`` -> ``nfnet``);
    2. else name keywords: hybrids (conv stem/stages + attention: coat, maxvit,
       levit, ...) -> Hybrid; pure attention/MLP models (vit, deit, swin, ...)
       -> Transformer; everything else -> CNN.
    """
    candidates = [family]
    if "_" in family:
        candidates.append(family.split("_", 1)[1])
    for fam in candidates:
        if fam in family_arch:
            return family_arch[fam]
    arch = timm_name.split(".", 1)[0]
    if any(w in arch for w in HYBRID_WORDS):
        return "Hybrid"
    if any(w in arch for w in TRANSFORMER_WORDS):
        return "Transformer"
    return "CNN"


def vision_registry(reference: Path) -> dict[str, dict]:
    timm = pd.read_csv(reference / "timm_results" / "results-imagenet.csv", thousands=",")
    bench = pd.read_csv(RESOURCES / "vision_benchmarks.csv").set_index("model")
    paper = set(pd.read_csv(RESOURCES / "paper_vision_scores.csv")["model"])
    if timm["model"].duplicated().any():
        raise SystemExit(f"duplicate timm names: {timm.loc[timm['model'].duplicated(), 'model'].tolist()}")
    families = {name: vision_family(name) for name in timm["model"]}
    votes: dict[str, Counter] = {}
    for name, fam in families.items():
        arch = bench["arch"].get(name)
        if isinstance(arch, str):
            votes.setdefault(fam, Counter())[arch] += 1
    family_arch = {fam: c.most_common(1)[0][0] for fam, c in votes.items()}

    out = {}
    for row in timm.itertuples(index=False):
        name = row.model
        entry = {
            "modality": "vision",
            "source": "timm",
            "architecture": name,
            "weights": "timm-hub",
            "benchmark": name,
            "family": families[name],
            "params": float(row.param_count),
        }
        arch = bench["arch"].get(name)
        if isinstance(arch, str):
            entry["arch"] = arch
        else:
            entry["arch"] = vision_arch_heuristic(name, families[name], family_arch)
            entry["arch_source"] = "heuristic"
        entry["img_size"] = int(row.img_size)
        entry["in_paper"] = name in paper
        out[name] = entry
    return out


# ----------------------------------------------------------------------------- language

SIZE_TOKEN = re.compile(r"^(\d+(?:\.\d+)?)([bBmM])$")
SIZE_WORDS = {"mini", "small", "medium", "large", "nemo"}
SUFFIX_WORDS = {"instruct", "chat", "it"}


def language_family(hf_id: str) -> str:
    """The model series of an HF id: the name up to its size, e.g.
    ``Qwen/Qwen2.5-7B-Instruct`` -> ``Qwen2.5``, ``google/gemma-2-9b-it`` -> ``gemma-2``,
    ``microsoft/Phi-3-mini-4k-instruct`` -> ``Phi-3``, ``mistralai/Mistral-Large-Instruct-2411``
    -> ``Mistral`` (the name is cut at the first size token (``7B``, ``0.5b``), size word
    (mini, small, medium, large, nemo) or suffix (instruct, chat, it))."""
    parts = hf_id.split("/")[-1].split("-")
    kept = []
    for p in parts:
        if SIZE_TOKEN.match(p) or p.lower() in SIZE_WORDS or p.lower() in SUFFIX_WORDS:
            break
        kept.append(p)
    return "-".join(kept) or parts[0]


def size_in_millions(token: str) -> float | None:
    m = SIZE_TOKEN.match(token)
    if not m:
        return None
    value = float(m.group(1))
    return value * 1000 if m.group(2).lower() == "b" else value


# language models whose architecture transformers does not ship (explicit opt-in, never a default)
NEEDS_REMOTE_CODE = {"internlm/internlm2_5-20b-chat"}


def language_registry(reference: Path) -> dict[str, dict]:
    models = pd.read_csv(reference / "language_models.csv", comment="#")
    bench = pd.read_csv(RESOURCES / "language_benchmarks.csv").set_index("model")
    paper = set(pd.read_csv(RESOURCES / "paper_language_scores.csv")["model"])
    out = {}
    for row in models.itertuples(index=False):
        hf_id = row.model
        entry = {
            "modality": "language",
            "source": "transformers",
            "architecture": hf_id,
            "weights": "hf-hub",
            # models whose architecture transformers does not ship run their repository's own code
            **({"trust_remote_code": True} if hf_id in NEEDS_REMOTE_CODE else {}),
            "benchmark": hf_id,
            "gpus": int(row.gpus),
            "family": language_family(hf_id),
        }
        params_b = bench["#Params (B)"].get(hf_id, math.nan)
        if isinstance(params_b, float) and not math.isnan(params_b):
            entry["params"] = round(float(params_b) * 1000, 3)
        else:
            sizes = [size_in_millions(t) for t in hf_id.split("/")[-1].split("-")]
            sizes = [s for s in sizes if s is not None]
            entry["params"] = sizes[0] if sizes else None
            entry["params_source"] = "name"
        entry["in_chatbot_arena"] = str(row.in_chatbot_arena).strip().lower() == "true"
        entry["in_paper"] = hf_id in paper
        out[hf_id] = entry
    return out


def pythia_registry(reference: Path) -> dict[str, dict]:
    ckpts = pd.read_csv(reference / "pythia_checkpoints.csv", comment="#")
    wanted = {f"EleutherAI/pythia-{s}-deduped": s for s in PYTHIA_SIZES}
    missing = set(wanted) - set(ckpts["model"])
    if missing:
        raise SystemExit(f"pythia_checkpoints.csv lacks {sorted(missing)}")
    out = {}
    for hf_id, size in wanted.items():  # size order, then the csv's step order
        for revision in ckpts.loc[ckpts["model"] == hf_id, "revision"]:
            step = int(re.fullmatch(r"step(\d+)", revision).group(1))
            out[f"{hf_id}@{revision}"] = {
                "modality": "language",
                "source": "transformers",
                "architecture": hf_id,
                "weights": "hf-hub",
                "gpus": 1,
                "family": "pythia-deduped",
                "params": size_in_millions(size),
                "size": size,
                "revision": revision,
                "step": step,
                "tokens": step * TOKENS_PER_STEP,
            }
    return out


# ----------------------------------------------------------------------------- output

HEADER = """\
# GENERATED by tools/make_registry.py from the paper's reference tables: do not edit by hand.
# {what}
# weights: timm-hub / hf-hub = pretrained weights from the local Hugging Face cache (offline).
# Extra keys (ModelEntry.extra): family, params (MILLIONS of parameters){more}.
"""


def write_registry(path: Path, entries: dict[str, dict], what: str, more: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=False)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(HEADER.format(what=what, more=more) + "\n" + body)
    tmp.replace(path)
    print(f"{path}: {len(entries)} models")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", nargs="?", type=Path, default=DEFAULT_REFERENCE,
                    help=f"the reference directory (default {DEFAULT_REFERENCE})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    args = ap.parse_args(argv)
    if not (args.reference / "timm_results" / "results-imagenet.csv").is_file():
        sys.exit(f"{args.reference}: not the reference directory (no timm_results/results-imagenet.csv)")

    vision = vision_registry(args.reference)
    language = language_registry(args.reference)
    pythia = pythia_registry(args.reference)
    clash = (set(vision) & set(language)) | (set(vision) & set(pythia)) | (set(language) & set(pythia))
    if clash:
        sys.exit(f"model names in two registry files: {sorted(clash)}")
    write_registry(args.out / "paper_vision.yaml", vision,
                   "timm vision models of timm's results-imagenet.csv (the paper's 594 + 2 it does not show).",
                   ", arch (CNN/Transformer/Hybrid; arch_source: heuristic where the table has none),"
                   " img_size, in_paper")
    write_registry(args.out / "paper_language.yaml", language,
                   "The paper's 43 instruction-tuned language models (HF ids); gpus = GPUs for fp16 inference.",
                   ", in_chatbot_arena, in_paper (params_source: name where the leaderboard has none)")
    write_registry(args.out / "pythia_checkpoints.yaml", pythia,
                   f"Pythia-deduped {', '.join(PYTHIA_SIZES)} at 18 training steps each (name = HF id@revision).",
                   f", size, revision, step, tokens (= step x {TOKENS_PER_STEP:,})")


if __name__ == "__main__":
    main()
