# Paths and target lists: the one place that knows where outputs live.
import glob
import inspect
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

try:
    from snakemake.common import overwrite_function_params
except ImportError:  # (a Snakemake without it looks the signatures up job by job)
    overwrite_function_params = None

from brainalign.io import InputError
from brainalign.alignment.metrics import resolve_metrics
from brainalign.models.registry import at_input_size, load_registry, select_models
from brainalign.plan import FIGURE_EXTS, Plan, figure_stems
from brainalign.data.nsd import BRAIN_FORMAT, NSDLayout

DEFAULT_MINI_NSD = "results/mini_nsd"
# tables mode: start from measurement tables in the paper's schema (its vision_all.parquet ...)
TABLES_FROM = config.get("tables_from")
# fmri: measure everything from NSD and the models; paper: start from the paper's per-model scores
SCORES_FROM = config["scores_from"]
# each mode has its own results directory, so no mode's run overwrites another's outputs
RESULTS = config.get("results") or (
    "results/from_tables" if TABLES_FROM else "results/paper" if SCORES_FROM == "paper" else "results"
)
NSD_ROOT = config["nsd_root"]
LAYOUT = NSDLayout(NSD_ROOT, config.get("coco_annotations"))
IS_DEFAULT_MINI = os.path.normpath(NSD_ROOT) == os.path.normpath(DEFAULT_MINI_NSD)
# the generated release's last file: what reads betas waits for the generator's brain stage
MINI_BRAIN_STAGE = [f"{DEFAULT_MINI_NSD}/ground_truth.json"] if IS_DEFAULT_MINI else []
SESSIONS = config["sessions"]  # all | [1, 2, ...] | {max: 37} (the paper's sessions)
# NSD's FreeSurfer folder is optional: without it ingest takes the package's HCP-MMP1 names and
# the brain maps (which need the fsaverage annotation) are left out
HAS_LABEL_TABLE = IS_DEFAULT_MINI or os.path.exists(LAYOUT.parcel_table)
SPLIT = config["split"]
SUBJECTS = list(config["subjects"])
REGISTRY_FILE = config["model_registry"]  # one file or a list
REGISTRY_FILES = [REGISTRY_FILE] if isinstance(REGISTRY_FILE, str) else list(REGISTRY_FILE)
DEVICE = config["device"]
VISION_INPUT_SIZE = config["vision_input_size"]  # None: each model's own eval transform
# threads of the jobs that query the measurement tables (DuckDB): two for real tables (--set-threads
# RULE=N raises it); one for the mini-NSD's measured tables (a few MB), so such jobs run side by side
TABLE_THREADS = 1 if IS_DEFAULT_MINI and not TABLES_FROM and SCORES_FROM != "paper" else 2
# auto: GPU jobs ask the scheduler for a GPU and use it when one is visible, else the CPU
USE_GPU = DEVICE.startswith("cuda") or DEVICE == "auto"
# every default comes from workflow/schemas/config.schema.yaml (filled in by validate_config)
ANALYSIS = config["analysis"]
# registry files that name the models' families (robustness statistics): the config's, then the paper's
FAMILY_REGISTRIES = REGISTRY_FILES + [
    p
    for p in ("config/registry/paper_vision.yaml", "config/registry/paper_language.yaml")
    if os.path.isfile(p) and p not in REGISTRY_FILES
]
NULL_PERMUTATIONS = int(config["null_permutations"])
# the align job's outputs, one per (subject, batch of models): the scores, and the permutation nulls when asked for
ALIGN_OUTPUTS = {"scores": f"{RESULTS}/alignment/{{split}}/{{subject}}/{{batch}}.parquet"}
if NULL_PERMUTATIONS:
    ALIGN_OUTPUTS["nulls"] = f"{RESULTS}/nulls/{{split}}/{{subject}}/{{batch}}.parquet"
MINI = config["mini_nsd"]


def _fail(msg):
    raise WorkflowError(msg)


_WARNED = set()


def _warn(msg):
    """One warning line at DAG build (each message once per Snakemake start)."""
    if msg not in _WARNED:
        _WARNED.add(msg)
        print(f"brainalign: warning: {msg}", file=sys.stderr)


try:
    if not IS_DEFAULT_MINI and not os.path.isdir(NSD_ROOT):
        raise InputError(f"config key 'nsd_root': {NSD_ROOT} is not a directory (point it at an NSD release)")
    REGISTRY = load_registry(REGISTRY_FILE)
    MODELS = {mod: select_models(REGISTRY, config[f"{mod}_models"], mod) for mod in ("vision", "language")}
    # models the workflow trains on the mini-NSD's own images run only on a mini-NSD release
    _mini_release = IS_DEFAULT_MINI or os.path.exists(os.path.join(NSD_ROOT, "ground_truth.json"))
    _mini_only = [m for mod in MODELS for m in MODELS[mod] if REGISTRY[m].extra.get("train") == "mini_nsd"]
    if _mini_only and not _mini_release and not config.get("tables_from"):
        MODELS = {mod: [m for m in names if m not in _mini_only] for mod, names in MODELS.items()}
        _warn(
            f"models {_mini_only[0]} .. ({len(_mini_only)}) are trained on the mini-NSD's images and cannot run on "
            f"nsd_root={NSD_ROOT}: left out (remove them from vision_models to silence this)"
        )
    METRICS = [s.name for s in resolve_metrics(config["metrics"])]
except (InputError, ValueError) as exc:
    _fail(str(exc))

MODALITY_OF = {m: mod for mod, names in MODELS.items() for m in names}
ALL_MODELS = MODELS["vision"] + MODELS["language"]


def _tables_mode():
    """Tables mode: which of DIR's tables exist (schemas checked from their footers, at once) and
    the metrics they hold."""
    from brainalign.analysis.tables import check_schema, connect, table_metrics

    if SCORES_FROM == "paper":
        _fail("config keys 'tables_from' and 'scores_from: paper' exclude each other (use one)")
    if not os.path.isdir(TABLES_FROM):
        _fail(
            f"config key 'tables_from': {TABLES_FROM} is not a directory (it must hold vision_all.parquet "
            "and/or language_all.parquet in the paper's schema)"
        )
    found = {}
    for mod in ("vision", "language"):
        for kind in ("all", "trained"):
            path = os.path.join(TABLES_FROM, f"{mod}_{kind}.parquet")
            if os.path.exists(path):
                check_schema(path)
                found[(mod, kind)] = path
    if not any(kind == "all" for _, kind in found):
        _fail(f"config key 'tables_from': {TABLES_FROM} holds neither vision_all.parquet nor language_all.parquet")
    con = connect("256MB", 2)
    metrics = {key: table_metrics(con, path) for key, path in found.items()}
    return found, metrics


try:
    TABLES, TABLE_METRICS = _tables_mode() if TABLES_FROM else ({}, {})
except InputError as exc:
    _fail(str(exc))
if TABLES_FROM:
    _present = set().union(*(v for k, v in TABLE_METRICS.items() if k[1] == "all"))
    METRICS = [s.name for s in resolve_metrics("all") if s.name in _present]
    TABLE_MODALITIES = [mod for mod in ("vision", "language") if (mod, "all") in TABLES]
else:
    TABLE_MODALITIES = [mod for mod in ("vision", "language") if MODELS[mod]]


def table_path(modality, kind="all"):
    """A measurement table: the user's (tables mode) or the one the workflow aggregates."""
    if TABLES_FROM:
        return TABLES[(modality, kind)]
    return f"{RESULTS}/tables/{modality}_all.parquet"


def check_path(modality, kind="all"):
    """The report of ``rule check_table`` on a table (its dimensions; fails on a bad table)."""
    return f"{RESULTS}/checks/{modality}_{kind}.json"


def trained_tables():
    """Tables mode: the checkpoint tables present (``{modality}_trained.parquet``)."""
    return [mod for mod in ("vision", "language") if (mod, "trained") in TABLES]


wildcard_constraints:
    subject=r"subj0[1-8]",
    split=r"paper|shared1000|all",
    modality=r"vision|language",
    sigma=r"\d+",


# Registry keys that do not change a model's features (benchmark-side metadata).
NOT_FEATURE_KEYS = {
    "benchmark",
    "gpus",
    "family",
    "params",
    "params_source",
    "arch",
    "arch_source",
    "img_size",
    "in_paper",
    "in_chatbot_arena",
    "chance_benchmarks",
}


def per_job(func):
    """An input, params or resources function of the features and align rules (one job per model or
    batch). Snakemake looks its signature up twice for every job (~40 us each); this looks it up once
    (~0.05 s of the paper's 1,169-job dry-run). Wrap it where used, e.g. entry=per_job(registry_entry)."""
    if overwrite_function_params is not None:
        overwrite_function_params(func, inspect.signature(func).parameters)
    return func


def registry_entry(wildcards):
    """The model's registry entry minus benchmark metadata: a params rerun trigger for this model only
    (a registry *file* as input would rerun every model's features whenever any entry changes)."""
    e = REGISTRY[wildcards.model]
    entry = {
        "modality": e.modality,
        "source": e.source,
        "architecture": e.architecture,
        "weights": e.weights,
        "seed": e.seed,
        "gpus": e.gpus,
        "benchmark": e.benchmark,
        **({"trust_remote_code": True} if e.trust_remote_code else {}),
    } | at_input_size(e, VISION_INPUT_SIZE).extra
    return {k: v for k, v in entry.items() if k not in NOT_FEATURE_KEYS}


def trained_weights(wildcards):
    """The checkpoint file of a model the workflow trains itself (registry ``train:``), else nothing."""
    e = REGISTRY[wildcards.model]
    return [e.weights] if e.extra.get("train") else []


def training_runs():
    """Training runs the workflow performs (registry ``train: mini_nsd``) for the selected models:
    run name -> directory, architecture, epochs, input size, seed."""
    runs = {}
    for m in ALL_MODELS:
        e = REGISTRY[m]
        if not e.extra.get("train"):
            continue
        if e.extra["train"] != "mini_nsd":
            _fail(f"model {m!r}: 'train: {e.extra['train']}' is unknown (the workflow trains on: mini_nsd)")
        run = runs.setdefault(
            e.extra["run"],
            {
                "dir": os.path.dirname(e.weights),
                "architecture": e.architecture,
                "epochs": [],
                "input_size": int(e.extra.get("input_size", 96)),
                "seed": e.seed,
            },
        )
        run["epochs"].append(int(e.extra["epoch"]))
    return runs


TRAINING_RUNS = training_runs()


def checkpoint_models():
    """Selected models that are checkpoints of a training run (vision epochs, or Pythia-style steps)."""
    out = []
    for m in ALL_MODELS:
        x = REGISTRY[m].extra
        if "epoch" in x:
            summary = x.get("summary")
            trained = x.get("train") or (summary and os.path.exists(summary))
            out.append(
                {
                    "src_model": m,
                    "run": x["run"],
                    "step": int(x["epoch"]),
                    "tokens": None,
                    "x_label": "training epoch",
                    "summary": summary if trained else None,
                }
            )
        elif "step" in x:
            out.append(
                {
                    "src_model": m,
                    "run": REGISTRY[m].architecture,
                    "step": int(x["step"]),
                    "tokens": x.get("tokens"),
                    "x_label": "training step",
                    "summary": None,
                }
            )
    return out


def model_gpus(wildcards):
    return REGISTRY[wildcards.model].gpus if USE_GPU else 0


ALIGN_BATCH_RECORD = f"{RESULTS}/alignment/{SPLIT}/batches.json"


def _align_batches():
    """Which models share an align job (brainalign.alignment.batches): the recorded batches that have started, the
    models in none of them chunked by config key 'align_batch'; recorded beside the alignment files."""
    if TABLES_FROM or SCORES_FROM == "paper":
        return {mod: {} for mod in MODELS}
    from brainalign.alignment.batches import batch_id, plan_batches, read_record

    def started(batch):
        return any(os.path.exists(f"{RESULTS}/alignment/{SPLIT}/{s}/{batch}.parquet") for s in SUBJECTS)

    try:
        batches = plan_batches(MODELS, config["align_batch"], read_record(ALIGN_BATCH_RECORD), started)
    except InputError as exc:
        _fail(str(exc))
    return {mod: {batch_id(b): b for b in groups} for mod, groups in batches.items()}


ALIGN_BATCHES = _align_batches()  # modality -> batch id -> its models
BATCH_MEMBERS = {bid: members for groups in ALIGN_BATCHES.values() for bid, members in groups.items()}


def record_align_batches():
    """Record the batches when jobs start (onstart: not in a dry-run, nor in a job's own process), so
    a batch that has begun keeps its models whatever is selected later."""
    from brainalign.alignment.batches import write_record

    if BATCH_MEMBERS:
        try:
            write_record(ALIGN_BATCH_RECORD, {mod: list(groups.values()) for mod, groups in ALIGN_BATCHES.items()})
        except OSError as exc:
            _warn(f"{ALIGN_BATCH_RECORD}: not written ({exc}); the align batches are planned afresh next time")


def alignment_files(modality):
    return expand(
        f"{RESULTS}/alignment/{SPLIT}/{{subject}}/{{batch}}.parquet",
        subject=SUBJECTS,
        batch=list(ALIGN_BATCHES[modality]),
    )


def _release_facts():
    """What the release on disk offers the plan (warning once about what it lacks)."""
    if TABLES_FROM or SCORES_FROM == "paper":
        # a real NSD's atlas: the mini-NSD's 12 parcels cannot show the tables' 180
        atlas = not IS_DEFAULT_MINI and all(os.path.exists(LAYOUT.fsaverage_labels(h)) for h in ("lh", "rh"))
        return {"ncsnr": False, "atlas": atlas}
    missing = [s for s in SUBJECTS if not IS_DEFAULT_MINI and not os.path.exists(LAYOUT.ncsnr(s))]
    if missing:
        _warn(f"noise ceilings left out: no {LAYOUT.ncsnr(missing[0])} (NSD's betas folder holds it)")
    atlas = IS_DEFAULT_MINI or all(os.path.exists(LAYOUT.fsaverage_labels(h)) for h in ("lh", "rh"))
    if not atlas:
        _warn(
            f"brain maps left out: {LAYOUT.fsaverage_labels('lh')} not found (download NSD's "
            "nsddata/freesurfer/fsaverage/label/ to draw them)"
        )
    return {"ncsnr": not missing, "atlas": atlas}


def _fit_metrics():
    """The configured metrics this release's stimulus count can define (neighbour k < stimuli), warning
    once which variants are left out; the design not readable yet (a release the workflow generates,
    a placeholder tree): all of them (the stimuli job reports a broken design itself)."""
    if TABLES_FROM or SCORES_FROM == "paper" or not os.path.exists(LAYOUT.expdesign):
        return METRICS
    from brainalign.alignment.metrics import fit_metrics
    from brainalign.data.nsd import stimulus_count

    try:
        counts = {s: stimulus_count(LAYOUT, s, SPLIT, SESSIONS) for s in SUBJECTS}
    except Exception:  # noqa: BLE001 - scipy.io, pandas and h5py raise many types; the stimuli job names them
        return METRICS
    subject = min(counts, key=counts.get)
    try:
        kept, dropped = fit_metrics(config["metrics"], counts[subject], f"{subject} (split {SPLIT})")
    except InputError as exc:
        _fail(str(exc))
    if dropped:
        _warn(
            f"metrics {', '.join(dropped)} left out: their k is not below the {counts[subject]} stimuli of "
            f"{subject} (split {SPLIT})"
        )
    return [m for m in METRICS if m in kept or m == "ridge_nc"]


METRICS = _fit_metrics()
RELEASE_FACTS = _release_facts()
# the ceiling-normalised encoding score, beside ridge, wherever the release has each voxel's ncsnr
if RELEASE_FACTS["ncsnr"] and "ridge" in METRICS and "ridge_nc" not in METRICS and not TABLES_FROM:
    METRICS.insert(METRICS.index("ridge") + 1, "ridge_nc")

# What is built, decided by brainalign.plan (pure, unit-tested) from the config and the release.
PLAN = Plan(
    results=RESULTS,
    split=SPLIT,
    subjects=tuple(SUBJECTS),
    modalities=tuple(TABLE_MODALITIES),
    metrics=tuple(METRICS),
    headline=ANALYSIS["metric"],
    kernel_sizes=tuple(ANALYSIS["kernel_sizes"]),
    mode="paper" if SCORES_FROM == "paper" else "tables" if TABLES_FROM else "measured",
    null_permutations=NULL_PERMUTATIONS,
    table_metrics=tuple(
        m for m in METRICS if TABLES_FROM and all(m in TABLE_METRICS[(mod, "all")] for mod in TABLE_MODALITIES)
    ),
    checkpoints=bool(trained_tables() if TABLES_FROM else checkpoint_models()),
    **RELEASE_FACTS,
)
noise_ceiling_files = PLAN.noise_ceiling_files
split_half_files = PLAN.split_half_files
roi_score_files = PLAN.roi_score_files
null_stats_files = PLAN.null_stats_files
score_modalities = PLAN.score_modalities
score_files = PLAN.score_files
stats_files = PLAN.stats_files
robustness_file = PLAN.robustness_files
figure_families = PLAN.figure_families
leadlag_files = PLAN.leadlag_files
figure_stem = PLAN.figure_stem


def roi_score_inputs(wildcards):
    return {
        "table": table_path(wildcards.modality),
        "check": check_path(wildcards.modality),
        "ceilings": split_half_files(),
        "nsd_ceilings": noise_ceiling_files(),
    }


def null_files(modality):
    return expand(
        f"{RESULTS}/nulls/{SPLIT}/{{subject}}/{{batch}}.parquet", subject=SUBJECTS, batch=list(ALIGN_BATCHES[modality])
    )


def batch_features(wildcards):
    """The features of an align batch's models on the job's subject."""
    return [f"{RESULTS}/features/{wildcards.split}/{wildcards.subject}/{m}.h5" for m in BATCH_MEMBERS[wildcards.batch]]


def table_files():
    return [] if TABLES_FROM else [table_path(mod) for mod in TABLE_MODALITIES]


def figure_outputs(family, stem, caption):
    """PNG (in the report, with its caption), PDF and CSV of one figure."""
    base = figure_stem(family, stem)
    return {
        "png": report(f"{base}.png", caption=f"../report/{caption}.rst", category=family),
        "pdf": f"{base}.pdf",
        "csv": f"{base}.csv",
    }


def measured_tables(wildcards=None):
    """The per-modality tables (named inputs ``vision``/``language``) the measured figures read, with
    their check reports (``vision_check``/``language_check``)."""
    out = {mod: table_path(mod) for mod in TABLE_MODALITIES}
    return out | {f"{mod}_check": check_path(mod) for mod in TABLE_MODALITIES}


def layer_inputs(wildcards=None):
    """The layer figure's tables, and the split-half ceilings when it normalises by them."""
    ceilings = split_half_files() if ANALYSIS["normalise_layers"] else []
    return measured_tables() | ({"ceilings": ceilings} if ceilings else {})


def trajectory_inputs(wildcards=None):
    """The trajectory figure's tables: the checkpoint tables in tables mode, else the measured ones."""
    if TABLES_FROM:
        mods = trained_tables()
        return {f"{m}_trained": table_path(m, "trained") for m in mods} | {
            f"{m}_trained_check": check_path(m, "trained") for m in mods
        }
    return measured_tables()


KERNEL_FROM, KERNEL_TO = ANALYSIS["kernel_sizes"]
FIGURES = figure_stems((KERNEL_FROM, KERNEL_TO))  # family -> file stem; which are built: PLAN


def brain_map_inputs(wildcards):
    atlas = {"lh": LAYOUT.fsaverage_labels("lh"), "rh": LAYOUT.fsaverage_labels("rh"), "ctab": LAYOUT.parcel_table}
    if wildcards.kind == "normalised":
        atlas["scores"] = f"{RESULTS}/stats/roi_scores_{wildcards.modality}.csv"
    elif SCORES_FROM != "paper":
        atlas["table"] = table_path(wildcards.modality)
        atlas["check"] = check_path(wildcards.modality)
    return {k: str(v) for k, v in atlas.items()}


def brain_map_files():
    return [f"{figure_stem('brain_maps', stem)}.{ext}" for stem in PLAN.brain_map_stems() for ext in FIGURE_EXTS]


def figure_files():
    return PLAN.figure_files()


# ----------------------------------------------------------------------------- convergence (model to model)
CONV = config["convergence"]
CONV_SPLIT = CONV["split"]
CONV_SUBJECT = CONV["subject"] or SUBJECTS[0]
CONV_KINDS = list(CONV["pairs"])
# tables mode: a user's convergence tables DIR/convergence_{kind}.parquet, read like the brain tables
CONV_TABLES_GIVEN = (
    {k: os.path.join(TABLES_FROM, f"convergence_{k}.parquet") for k in CONV_KINDS} if TABLES_FROM else {}
)
CONV_TABLES_GIVEN = {k: p for k, p in CONV_TABLES_GIVEN.items() if os.path.exists(p)}
CONV_BATCH_RECORD = f"{RESULTS}/convergence/{CONV_SPLIT}/batches.json"


def _conv_modalities():
    from brainalign.alignment.convergence import kind_modalities

    return {m for k in CONV_KINDS for m in kind_modalities(k)}


CONV_MODALITIES = _conv_modalities()  # the modalities the pair kinds involve


def _conv_metrics():
    """The convergence metrics, checked against the stimulus set's size (a neighbour k needs more stimuli)."""
    try:
        names = [s.name for s in resolve_metrics(CONV["metrics"])]
    except ValueError as exc:
        _fail(f"config key 'convergence: metrics': {exc}")
    if CONV["metric"] not in names:
        _fail(
            f"config key 'convergence: metric': {CONV['metric']} is not among 'convergence: metrics' "
            f"({', '.join(names)}): add it there"
        )
    if CONV_SUBJECT not in SUBJECTS:
        _fail(f"config key 'convergence: subject': {CONV_SUBJECT} is not one of 'subjects' ({', '.join(SUBJECTS)})")
    if TABLES_FROM or SCORES_FROM == "paper" or not os.path.exists(LAYOUT.expdesign):
        return names
    from brainalign.alignment.metrics import fit_metrics
    from brainalign.data.nsd import stimulus_count

    try:
        n = stimulus_count(LAYOUT, CONV_SUBJECT, CONV_SPLIT, SESSIONS)
    except Exception:  # noqa: BLE001 - the stimuli job reports a broken design itself
        return names
    try:
        kept, dropped = fit_metrics(
            CONV["metrics"], n, f"{CONV_SUBJECT} (convergence split {CONV_SPLIT})", key="convergence: metrics"
        )
    except InputError as exc:
        _fail(str(exc))
    if dropped:
        _warn(f"convergence metrics {', '.join(dropped)} left out: their k is not below the {n} stimuli")
    return kept


CONV_METRICS = _conv_metrics()


def _conv_batches():
    """Which models share a converge job's side: the align batches' planner with its own record."""
    if TABLES_FROM or SCORES_FROM == "paper":
        return {}
    from brainalign.alignment.batches import batch_id, plan_batches, read_record

    root = f"{RESULTS}/convergence/{CONV_SPLIT}"

    def started(batch):  # a job file of any kind with the batch on either side
        b = glob.escape(batch)
        return bool(glob.glob(f"{root}/*/{b}/*.parquet") or glob.glob(f"{root}/*/*/{b}.parquet"))

    try:
        batches = plan_batches(
            {m: MODELS[m] for m in ("vision", "language") if m in CONV_MODALITIES},
            CONV["batch"],
            read_record(CONV_BATCH_RECORD),
            started,
            key="convergence: batch",
        )
    except InputError as exc:
        _fail(str(exc))
    return {mod: {batch_id(b): b for b in groups} for mod, groups in batches.items()}


CONV_BATCHES = _conv_batches()  # modality -> batch id -> its models
CONV_MEMBERS = {bid: members for groups in CONV_BATCHES.values() for bid, members in groups.items()}


def _conv_jobs():
    from brainalign.alignment.convergence import job_pairs

    return job_pairs({mod: list(groups) for mod, groups in CONV_BATCHES.items()}, CONV_KINDS) if CONV_BATCHES else []


CONV_JOBS = _conv_jobs()


def record_conv_batches():
    """Record the converge batches when jobs start, as the align batches (record_align_batches)."""
    from brainalign.alignment.batches import write_record

    if CONV_MEMBERS:
        try:
            write_record(CONV_BATCH_RECORD, {mod: list(groups.values()) for mod, groups in CONV_BATCHES.items()})
        except OSError as exc:
            _warn(f"{CONV_BATCH_RECORD}: not written ({exc}); the converge batches are planned afresh next time")


def conv_job_files(kind):
    return [f"{RESULTS}/convergence/{CONV_SPLIT}/{k}/{a}/{b}.parquet" for k, a, b in CONV_JOBS if k == kind]


def conv_features(models):
    return [f"{RESULTS}/features/{CONV_SPLIT}/{CONV_SUBJECT}/{m}.h5" for m in models]


def conv_kinds():
    """The pair kinds this run has tables of: the configured ones (tables mode: those DIR holds)."""
    return list(CONV_TABLES_GIVEN) if TABLES_FROM else CONV_KINDS


def conv_table(kind):
    """A convergence table: the user's (tables mode) or the one the workflow aggregates."""
    return CONV_TABLES_GIVEN[kind] if TABLES_FROM else f"{RESULTS}/tables/convergence_{kind}.parquet"


CONV_STATS = {n: f"{RESULTS}/stats/convergence/{n}.csv" for n in ("pairs", "models", "correlations")}
CONV_FIGURE = f"{RESULTS}/figures/convergence/convergence"


def convergence_targets():
    """Everything the convergence part builds (none in precomputed mode, nor in tables mode without
    convergence tables)."""
    if SCORES_FROM == "paper" or (TABLES_FROM and not CONV_TABLES_GIVEN):
        return []
    return list(CONV_STATS.values()) + [f"{CONV_FIGURE}.{ext}" for ext in FIGURE_EXTS]


def conv_score_files():
    """The brain's model scores of the modalities in cross-modal pairs, where this run has them."""
    return {m: f"{RESULTS}/stats/model_scores_{m}.csv" for m in TABLE_MODALITIES if m in CONV_MODALITIES}


def all_targets():
    return PLAN.all_targets(table_files()) + (convergence_targets() if CONV["default_target"] else [])


# ----------------------------------------------------------------------------- results explorer
def explorer_inputs(wildcards=None):
    """The explorer's named inputs: per modality its table, check report, model scores (and nulls); the
    metric-family table, ceilings, registries and the surface atlas where the run has them."""
    out = {}
    for mod in TABLE_MODALITIES:
        out[mod] = table_path(mod)
        out[f"{mod}_check"] = check_path(mod)
        out[f"{mod}_scores"] = f"{RESULTS}/stats/model_scores_{mod}.csv"
        if PLAN.null_stats_files():
            out[f"{mod}_nulls"] = f"{RESULTS}/stats/nulls_{mod}_parcels.csv"
    out["by_metric"] = PLAN.headline_by_metric_files()
    out["ceilings"] = split_half_files()
    out["registry"] = FAMILY_REGISTRIES
    if RELEASE_FACTS["atlas"]:
        out |= {"lh": LAYOUT.fsaverage_labels("lh"), "rh": LAYOUT.fsaverage_labels("rh"), "ctab": LAYOUT.parcel_table}
    return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in out.items()}
