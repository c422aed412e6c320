"""The package's layout by workflow stage (docs/api.md, "Package layout"): no import cycle, the
alignment engine independent of every other stage, and the old module paths still working for
one release with a warning that names the new one."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import brainalign

PKG = Path(brainalign.__file__).parent
# module -> where it moved (the shims at the old paths)
MOVED = {
    "nsd": "data.nsd", "mini_nsd": "data.mini_nsd",
    "features": "models.features", "weights": "models.weights", "training": "models.training",
    "checkpoint_io": "models.checkpoint_io", "vlm": "models.vlm",
    "engine": "alignment.engine", "metrics": "alignment.metrics", "summary": "alignment.summary",
    "nulls": "alignment.nulls", "ceiling": "alignment.ceiling", "encoding": "alignment.encoding",
    "rsa": "alignment.rsa",
    "tables": "analysis.tables", "stats": "analysis.stats", "robustness": "analysis.robustness",
    "leadlag": "analysis.leadlag",
    "figure_stages": "figures.stages", "brainmap": "figures.brainmap",
    "bench_analysis": "bench.analysis", "bench_scale": "bench.scale", "synthetic": "bench.synthetic",
}
# former modules that are now packages of the same name, re-exporting the module's names
REEXPORTED = {"models": "models.registry", "analysis": "analysis.reference", "figures": "figures.panels",
              "bench": "bench.engine"}


def module_graph() -> dict[str, set[str]]:
    """Module-level imports between brainalign's modules (function-level imports run later and cannot
    cycle at import time); importing ``a.b.c`` also imports the packages ``a.b`` and ``a``."""
    names = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = defaultdict(set)
    for name, path in names.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target in names or "." in target:
                    if target in names and target != name and not name.startswith(target + "."):
                        graph[name].add(target)
                    target = target.rpartition(".")[0]
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_and_the_cycle_finder_finds_one():
    assert find_cycle(module_graph()) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_alignment_engine_imports_no_other_stage():
    """brainalign.alignment (engine, metrics, summaries, nulls ...) depends on brainalign.io alone, so
    users' scripts and any dataset can call it without the workflow's stages."""
    graph = module_graph()
    outside = {(a, b) for a, bs in graph.items() for b in bs
               if a.startswith("brainalign.alignment") and not b.startswith("brainalign.alignment")}
    assert outside and {b for _, b in outside} <= {"brainalign.io", "brainalign"}, outside


def test_old_module_paths_work_for_one_release_and_name_the_new_one():
    """Each old path is the new module itself (private names, monkeypatching), with one FutureWarning
    naming the new path; the former modules that became packages re-export their names silently."""
    code = f"""
import importlib, sys, warnings
moved = {MOVED!r}
reexported = {REEXPORTED!r}
for old, new in moved.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module("brainalign." + old)
    assert module is importlib.import_module("brainalign." + new), old
    assert sys.modules["brainalign." + old] is module
    texts = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert len(texts) == 1 and "brainalign." + new in texts[0], (old, texts)
for old, new in reexported.items():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        package, module = importlib.import_module("brainalign." + old), importlib.import_module("brainalign." + new)
    public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))
              and getattr(getattr(module, n), "__module__", None) == module.__name__]
    assert public and all(getattr(package, n) is getattr(module, n) for n in public), old
import brainalign
assert brainalign.align is importlib.import_module("brainalign.alignment.metrics").align
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    # an old module path still runs as a program (python -m), its exit status passed on
    proc = subprocess.run([sys.executable, "-m", "brainalign.bench_scale", "--help"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "usage" in proc.stdout and "brainalign.bench.scale" in proc.stderr, proc.stderr
