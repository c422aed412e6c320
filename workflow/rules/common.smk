# Paths and target lists: the one place that knows where outputs live.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from brainalign.io import InputError
from brainalign.metrics import resolve_metrics
from brainalign.models import load_registry, select_models
from brainalign.nsd import NSDLayout

DEFAULT_MINI_NSD = "results/mini_nsd"
RESULTS = config.get("results", "results")
NSD_ROOT = config["nsd_root"]
LAYOUT = NSDLayout(NSD_ROOT)
SPLIT = config["split"]
SUBJECTS = list(config["subjects"])
REGISTRY_FILE = config.get("model_registry", "config/models.yaml")  # one file or a list
REGISTRY_FILES = [REGISTRY_FILE] if isinstance(REGISTRY_FILE, str) else list(REGISTRY_FILE)
DEVICE = config["device"]
# auto: GPU jobs ask the scheduler for a GPU and use it when one is visible, else the CPU
USE_GPU = DEVICE.startswith("cuda") or DEVICE == "auto"
# fmri: measure everything from NSD and the models; paper: start from the paper's per-model scores
SCORES_FROM = config.get("scores_from", "fmri")
ANALYSIS = {
    "metric": "cka_36",
    "pooling": "max_roi_mean_layer",
    "vision_benchmark": "imagenet",
    "language_benchmark": "Average ⬆️",
} | config.get("analysis", {})
MINI = {"seed": 0, "vision_model": "tf_efficientnet_lite0", "language_model": "all-MiniLM-L6-v2"} | config.get(
    "mini_nsd", {}
)


def _fail(msg):
    raise WorkflowError(msg)


try:
    if os.path.normpath(NSD_ROOT) != os.path.normpath(DEFAULT_MINI_NSD) and not os.path.isdir(NSD_ROOT):
        raise InputError(f"config key 'nsd_root': {NSD_ROOT} is not a directory (point it at an NSD release)")
    REGISTRY = load_registry(REGISTRY_FILE)
    MODELS = {mod: select_models(REGISTRY, config[f"{mod}_models"], mod) for mod in ("vision", "language")}
    METRICS = [s.name for s in resolve_metrics(config["metrics"])]
except (InputError, ValueError) as exc:
    _fail(str(exc))

MODALITY_OF = {m: mod for mod, names in MODELS.items() for m in names}
ALL_MODELS = MODELS["vision"] + MODELS["language"]


wildcard_constraints:
    subject=r"subj0[1-8]",
    split=r"paper|shared1000|all",
    modality=r"vision|language",
    sigma=r"\d+",


# Registry keys that do not change a model's features (benchmark-side metadata).
NOT_FEATURE_KEYS = {"benchmark", "gpus", "family", "params", "params_source", "arch", "arch_source", "img_size",
                    "in_paper", "in_chatbot_arena", "chance_benchmarks"}


def registry_entry(wildcards):
    """The model's registry entry minus benchmark metadata: a params rerun trigger for this model only
    (a registry *file* as input would rerun every model's features whenever any entry changes)."""
    e = REGISTRY[wildcards.model]
    entry = {"modality": e.modality, "source": e.source, "architecture": e.architecture, "weights": e.weights,
             "seed": e.seed, "gpus": e.gpus, "benchmark": e.benchmark} | e.extra
    return {k: v for k, v in entry.items() if k not in NOT_FEATURE_KEYS}


def model_gpus(wildcards):
    return REGISTRY[wildcards.model].gpus if USE_GPU else 0


def alignment_files(modality):
    return expand(
        f"{RESULTS}/alignment/{SPLIT}/{{subject}}/{{model}}.parquet",
        subject=SUBJECTS,
        model=MODELS[modality],
    )


def table_files():
    return [f"{RESULTS}/tables/{mod}_all.parquet" for mod in ("vision", "language") if MODELS[mod]]


def score_modalities():
    if SCORES_FROM == "paper":
        return ["vision", "language"]
    return [mod for mod in ("vision", "language") if MODELS[mod]]


def score_files():
    return [f"{RESULTS}/stats/model_scores_{mod}.csv" for mod in score_modalities()]


def stats_files():
    if set(score_modalities()) != {"vision", "language"}:
        return []
    if SCORES_FROM == "paper":
        sigmas = [20, 28, 36, 44, 52, 60, 68, 76, 84, 92, 100]
    else:  # the analysis metric's kernel size; any other is one target away
        sigmas = [int(ANALYSIS["metric"][4:])] if ANALYSIS["metric"] in METRICS else []
    return [f"{RESULTS}/stats/correlation_sigma{s}.csv" for s in sigmas]


def figure_files():
    stem = f"{RESULTS}/figures/performance/brain_score_vs_benchmark"
    return [f"{stem}.png", f"{stem}.pdf", f"{stem}.csv"]


def all_targets():
    if SCORES_FROM == "paper":
        return stats_files() + figure_files()
    return table_files() + stats_files() + figure_files()
