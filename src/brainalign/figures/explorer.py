"""The results explorer: one static, offline site per run (``results/explorer/index.html``).

What it shows:

- **index.html**: a leaderboard per modality (every model with its brain score under the run's pooling
  and the selected metric, the score's 95% interval over subjects, the modality's headline benchmark,
  family, parameters, architecture class, depth; sortable, searchable, filterable by family and class),
  the headline scatter (brain score against the benchmark; hover names the model, a click opens its
  page) and the score-by-metric table (``stats/headline_by_metric.csv``: per metric variant the
  correlation with the benchmark and its intervals; a click selects the metric).
- **models/<page>.html**, one per model: its layer x parcel profile of the headline metric (mean over
  subjects), the layer profile per Yeo-7 network, its per-parcel brain map (the best layer of each
  parcel, drawn on the inflated surface by :func:`brainalign.figures.brainmap.paint_raster`), its rank
  within its family, per parcel the score against the split-half ceiling and the permutation results
  where the run has them.

Everything is computed from the out-of-core readers of :mod:`brainalign.analysis.tables` (small
aggregates: per (metric, model, subject, layer), per (model, layer, parcel) of one metric); the table
is never loaded. The site is files only: the pages, ``assets/`` (its own script and style, and
Plotly's bundle, pinned in requirements.txt) and the data inlined in each page as JSON, so it opens
from ``file://`` and from a copied folder (relative links only). Every name from the tables or the
registry reaches the page as JSON data or escaped HTML, never as markup.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.analysis import tables
from brainalign.io import InputError

log = logging.getLogger(__name__)

#: Format version of the site (written into every page).
EXPLORER_VERSION = 1
ASSETS = Path(__file__).with_name("explorer_assets")


def model_page(name: str) -> str:
    """The file name of a model's page: its name's safe characters and a hash of the whole name (two
    names that differ only in other characters get different pages)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")[:80] or "model"
    return f"{stem}-{hashlib.sha1(str(name).encode()).hexdigest()[:8]}.html"


def subject_interval(values: Sequence[float]) -> tuple[float, float, float, int]:
    """Mean over subjects and its 95% t-interval (NaN bounds with one subject): ``mean, low, high, n``."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan, 1
    from scipy import stats

    t = float(stats.t.ppf(0.975, v.size - 1))
    half = t * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half, int(v.size)


def leaderboard_scores(path: str | Path, metrics: Sequence[str], pooling: str, con=None) -> pd.DataFrame:
    """Per (metric, model): the brain score (``pooling`` over layers, per subject; the mean over
    subjects), its 95% interval over subjects and the number of subjects. Columns ``metric, src_model,
    score, low, high, n_subjects``."""
    layers = tables.layer_scores(path, metrics, con)
    pooled = tables.pool_layers(layers, pooling)
    rows = []
    for (metric, model), grp in pooled.groupby(["metric", "src_model"], observed=True, sort=True):
        mean, lo, hi, n = subject_interval(grp["score"].to_numpy())
        rows.append((metric, model, mean, lo, hi, n))
    return pd.DataFrame(rows, columns=["metric", "src_model", "score", "low", "high", "n_subjects"])


def layer_parcel_profiles(path: str | Path, metric: str, con=None) -> pd.DataFrame:
    """Per (model, layer, parcel) the score of ``metric`` averaged over subjects (NaN scores left out),
    with the parcel's network. Columns ``src_model, src_feature, tgt_feature, yeo7, score``."""
    con = con or tables.connect()
    return tables._df(con, "SELECT src_model, src_feature, tgt_feature, first(yeo7) AS yeo7, "
                           "avg(score) FILTER (WHERE NOT isnan(score)) AS score "
                           f"FROM read_parquet({tables._lit(path)}) {tables._metric_filter([metric])} "
                           "GROUP BY src_model, src_feature, tgt_feature "
                           "ORDER BY src_model, src_feature, tgt_feature")


def subject_best_layers(path: str | Path, metric: str, con=None) -> pd.DataFrame:
    """Per (model, subject, parcel) the best layer's score of ``metric``. Columns ``src_model,
    tgt_model, tgt_feature, best``."""
    con = con or tables.connect()
    return tables._df(con, "SELECT src_model, tgt_model, tgt_feature, "
                           "max(score) FILTER (WHERE NOT isnan(score)) AS best "
                           f"FROM read_parquet({tables._lit(path)}) {tables._metric_filter([metric])} "
                           "GROUP BY ALL")


@dataclass
class ExplorerInputs:
    """What one modality's part of the site is built from."""

    modality: str
    table: Path
    scores: Path  # stats/model_scores_{modality}.csv
    benchmark: str
    nulls: Path | None = None  # stats/nulls_{modality}_parcels.csv
    extra: dict = field(default_factory=dict)


def _clean(x):
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if x is None:
        return None
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return round(x, 6) if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def script_json(obj) -> str:
    """``obj`` as JSON safe inside a ``<script type="application/json">`` element (no ``<``, ``>`` or
    ``&`` characters, so no name can close the element or start markup)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str, root: str, scripts: Sequence[str], data: dict) -> str:
    tags = "\n".join(f'<script src="{root}assets/{s}"></script>' for s in scripts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<link rel=\"icon\" href=\"data:,\">\n"
        f"<meta name=\"generator\" content=\"brainalign explorer v{EXPLORER_VERSION}\">\n"
        f"<title>{_e(title)}</title>\n<link rel=\"stylesheet\" href=\"{root}assets/explorer.css\">\n</head>\n"
        f"<body>\n{body}\n<script type=\"application/json\" id=\"explorer-data\">{script_json(data)}</script>\n"
        f"{tags}\n</body>\n</html>\n"
    )


def _params(col, model):
    """Parameters in millions: the vision tables' ``#Params (M)`` or the language tables' ``#Params (B)``."""
    m = col("#Params (M)", model)
    if m is not None:
        return m
    b = col("#Params (B)", model)
    return None if b is None else round(b * 1000.0, 3)


def _viridis_css() -> str:
    from matplotlib import colormaps

    stops = [colormaps["viridis"](x)[:3] for x in np.linspace(0, 1, 9)]
    return "linear-gradient(to right, " + ", ".join(
        "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgb) for rgb in stops) + ")"


def _family_ranks(board: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per model: its rank by brain score within its family (1 = best) and the family's size."""
    out = {}
    for _, grp in board.groupby("family", sort=False):
        ranked = grp.sort_values("score", ascending=False, na_position="last")
        for i, model in enumerate(ranked["model"], start=1):
            out[model] = (i, len(grp))
    return out


class ExplorerBuilder:
    """Builds the site into a directory (the caller makes it appear atomically)."""

    def __init__(self, out: Path, metric: str, pooling: str, registry: Mapping | None = None,
                 ceilings: pd.DataFrame | None = None, atlas=None, by_metric: pd.DataFrame | None = None,
                 title: str = "brainalign results"):
        self.out, self.metric, self.pooling = Path(out), metric, pooling
        self.registry, self.ceilings, self.atlas, self.by_metric = registry, ceilings, atlas, by_metric
        self.title = title
        self.con = tables.connect()
        self.modalities: dict[str, dict] = {}
        self._raster = None
        (self.out / "models").mkdir(parents=True, exist_ok=True)
        (self.out / "assets").mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- one modality
    def add_modality(self, inp: ExplorerInputs) -> None:
        from brainalign.alignment.metrics import METRICS, metric_spec
        from brainalign.analysis.robustness import model_families

        scores = pd.read_csv(inp.scores)
        if "model" not in scores.columns:
            raise InputError(f"{inp.scores}: no column 'model' (a model_scores table of the workflow)")
        held = tables.table_metrics(self.con, inp.table)
        metrics = [m for m in METRICS if m in held] + [m for m in held if m not in METRICS]
        if not metrics:
            raise InputError(f"{inp.table}: no metric rows")
        metric = self.metric if self.metric in metrics else metrics[0]
        if metric != self.metric:
            log.warning("%s: no rows for %s; the model pages show %s", inp.table, self.metric, metric)
        board = leaderboard_scores(inp.table, metrics, self.pooling, self.con)
        models = [m for m in scores["model"].astype(str)]
        extra = sorted(set(board["src_model"]) - set(models))
        models += extra  # a model of the table without a score row still gets its line and page
        families = model_families(models, self.registry)
        info = scores.set_index(scores["model"].astype(str))

        def col(name, model):
            return _clean(info.at[model, name]) if name in info.columns and model in info.index else None

        rows = []
        for model, family in zip(models, families, strict=True):
            rows.append({"model": model, "page": model_page(model), "family": family,
                         "arch": col("arch", model), "params": _params(col, model),
                         "n_layers": col("n_layers", model), "benchmark": col(inp.benchmark, model)})
        index = {m: i for i, m in enumerate(models)}
        by_metric = {}
        for metric_name, grp in board.groupby("metric", observed=True, sort=False):
            cells = [[None, None, None, 0] for _ in models]
            for r in grp.itertuples(index=False):
                cells[index[r.src_model]] = [_clean(r.score), _clean(r.low), _clean(r.high), int(r.n_subjects)]
            by_metric[str(metric_name)] = cells
        head = board[board["metric"] == metric].set_index("src_model")
        ranked = pd.DataFrame({"model": models, "family": families,
                               "score": [head["score"].get(m, np.nan) for m in models]})
        ranks = _family_ranks(ranked)
        self.modalities[inp.modality] = {
            "modality": inp.modality, "benchmark": inp.benchmark, "metric": metric,
            "metrics": [m for m in metrics if metric_spec(m) is not None or m in by_metric],
            "models": rows, "scores": by_metric,
        }
        self._model_pages(inp, metric, rows, ranks, by_metric.get(metric, []))

    def _nulls(self, path: Path | None) -> pd.DataFrame | None:
        if path is None or not Path(path).exists():
            return None
        df = pd.read_csv(path, dtype={"tgt_feature": str})
        return df.groupby(["src_model", "tgt_feature"]).agg(
            subjects_significant=("n_significant", lambda s: int((s > 0).sum())),
            n_subjects=("n_significant", "size"), min_p_perm=("min_p_perm", "min"), n_null=("n_null", "max"))

    def _model_pages(self, inp: ExplorerInputs, metric: str, rows: list[dict], ranks: dict,
                     head_cells: list) -> None:
        profiles = layer_parcel_profiles(inp.table, metric, self.con)
        norm = None
        if self.ceilings is not None and len(self.ceilings):
            c = self.ceilings
            if "metric" in c.columns:
                c = c[c["metric"] == metric]
            if len(c):  # the per-subject best layers: a second pass over the table, only where it is used
                best = subject_best_layers(inp.table, metric, self.con)
                j = best.merge(c[["tgt_model", "tgt_feature", "ceiling"]], on=["tgt_model", "tgt_feature"], how="inner")
                j["normalised"] = j["best"] / j["ceiling"].where(j["ceiling"] > 0)
                norm = j.groupby(["src_model", "tgt_feature"]).agg(ceiling=("ceiling", "mean"),
                                                                    normalised=("normalised", "mean"))
        nulls = self._nulls(inp.nulls)
        finite = profiles["score"].to_numpy()
        finite = finite[np.isfinite(finite)]
        limits = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        by_model = dict(iter(profiles.groupby("src_model", sort=False, observed=True)))
        for pos, row in enumerate(rows):
            model = row["model"]
            prof = by_model.get(model)
            if prof is None or prof.empty:
                continue
            mat = prof.pivot(index="src_feature", columns="tgt_feature", values="score").sort_index()
            parcels = [str(p) for p in mat.columns]
            nets = prof.drop_duplicates("tgt_feature").set_index("tgt_feature")["yeo7"].astype(str)
            net_of = [nets.get(p, "") for p in mat.columns]
            values = mat.to_numpy()
            best_layer = np.where(np.isfinite(values).any(axis=0),
                                  np.nanargmax(np.where(np.isfinite(values), values, -np.inf), axis=0), -1)
            parcel_rows = []
            for k, parcel in enumerate(mat.columns):
                r = {"parcel": str(parcel), "network": net_of[k],
                     "best_layer": int(mat.index[best_layer[k]]) if best_layer[k] >= 0 else None,
                     "score": _clean(values[best_layer[k], k]) if best_layer[k] >= 0 else None}
                if norm is not None:
                    key = (model, parcel)
                    r["ceiling"] = _clean(norm["ceiling"].get(key, np.nan))
                    r["normalised"] = _clean(norm["normalised"].get(key, np.nan))
                if nulls is not None:
                    key = (model, str(parcel))
                    if key in nulls.index:
                        n = nulls.loc[key]
                        r["significant"] = f"{int(n['subjects_significant'])}/{int(n['n_subjects'])}"
                        r["min_p_perm"] = _clean(n["min_p_perm"])
                parcel_rows.append(r)
            networks = {}
            for net in dict.fromkeys(net_of):
                cols = [k for k, x in enumerate(net_of) if x == net]
                with np.errstate(invalid="ignore"):
                    sub = values[:, cols]
                    cnt = np.isfinite(sub).sum(axis=1)
                    networks[net] = [_clean(s / c) if c else None
                                     for s, c in zip(np.nansum(sub, axis=1), cnt, strict=True)]
            brain_png = self._brain_map(row["page"], dict(zip(parcels, [p["score"] for p in parcel_rows],
                                                                strict=True)), limits)
            rank, size = ranks.get(model, (None, None))
            head = head_cells[pos] if pos < len(head_cells) else [None, None, None, 0]
            data = {
                "version": EXPLORER_VERSION, "model": model, "modality": inp.modality, "metric": metric,
                "pooling": self.pooling, "layers": [int(i) for i in mat.index], "parcels": parcels,
                "networks_of_parcels": net_of, "matrix": [[_clean(v) for v in line] for line in values],
                "network_profiles": networks, "parcel_rows": parcel_rows,
                "has_ceilings": norm is not None, "has_nulls": nulls is not None,
            }
            self._write_model_page(row, data, head, rank, size, brain_png, limits, metric, inp)

    def _brain_map(self, page: str, values: dict, limits: tuple[float, float]) -> str | None:
        if self.atlas is None:
            return None
        from PIL import Image

        from brainalign.figures.brainmap import paint_raster, parcel_raster

        if self._raster is None:
            self._raster = parcel_raster(self.atlas)
        name = page[:-5] + ".png"
        img = paint_raster(self._raster, {k: v for k, v in values.items() if v is not None}, *limits)
        Image.fromarray(img).save(self.out / "models" / name, compress_level=6)
        return name

    def _write_model_page(self, row: dict, data: dict, head: list, rank, size, brain_png, limits, metric,
                          inp: ExplorerInputs) -> None:
        model = row["model"]
        score, lo, hi, n = head

        def num(x, digits=4):
            return "n/a" if x is None else f"{x:.{digits}g}"

        facts = [
            ("modality", inp.modality), ("family", row["family"]),
            ("architecture class", row["arch"] if row["arch"] is not None else "n/a"),
            ("parameters (M)", num(row["params"])),
            ("layers", f'<span id="n-layers">{len(data["layers"])}</span>'),
            ("parcels", f'<span id="n-parcels">{len(data["parcels"])}</span>'),
            (f"brain score ({metric}, {self.pooling})",
             f"{num(score)}" + (f" [{num(lo)}, {num(hi)}] over {n} subjects" if lo is not None else
                                f" ({n} subject{'s' if n != 1 else ''})")),
            (f"benchmark ({inp.benchmark})", num(row["benchmark"])),
            ("rank in family", f"{rank} of {size}" if rank else "n/a"),
        ]
        if data["has_ceilings"]:
            ratios = [r["normalised"] for r in data["parcel_rows"] if r.get("normalised") is not None]
            facts.append(("score / split-half ceiling", f"{num(float(np.mean(ratios)))} (mean over the {len(ratios)} "
                          "parcels with a reliable ceiling)" if ratios else "n/a (no parcel has a reliable ceiling)"))
        if data["has_nulls"]:
            sig = [r for r in data["parcel_rows"] if r.get("significant") and not r["significant"].startswith("0/")]
            facts.append(("permutation nulls", f"{len(sig)} of {len(data['parcel_rows'])} parcels significant "
                          "(FDR) in at least one subject"))
        dl = "\n".join(
            f"<dt>{_e(k)}</dt><dd>{v if k in ('layers', 'parcels') else _e(v)}</dd>" for k, v in facts)
        brain = (f'<figure><img id="brain-map" src="{_e(brain_png)}" alt="per-parcel brain map">'
                 f'<div class="colorbar"><span>{limits[0]:.3g}</span><span class="ramp" style="background: '
                 f'{_viridis_css()}"></span><span>{limits[1]:.3g}</span></div>'
                 f"<figcaption>best layer per parcel, {_e(metric)} (mean over subjects); the colour scale is "
                 "shared by every model of the modality; grey: no score</figcaption></figure>"
                 if brain_png else "<p>No brain map: the run has no surface atlas.</p>")
        body = (
            f'<nav><a id="home" href="../index.html">&larr; all models</a></nav>\n'
            f'<h1 id="model-name">{_e(model)}</h1>\n<dl class="facts">\n{dl}\n</dl>\n'
            f"<h2>Layer x parcel profile ({_e(metric)}, mean over subjects)</h2>\n"
            '<div id="heatmap" class="chart"></div>\n'
            "<h2>Layer profile per Yeo-7 network</h2>\n<div id=\"networks\" class=\"chart\"></div>\n"
            f"<h2>Brain map</h2>\n{brain}\n"
            "<h2>Parcels</h2>\n<table id=\"parcels\"><thead></thead><tbody></tbody></table>\n"
        )
        page = _page(f"{model} - brainalign", body, "../", ("plotly.min.js", "model.js"), data)
        (self.out / "models" / row["page"]).write_text(page, encoding="utf-8")

    # ---------------------------------------------------------------- the index
    def finish(self) -> None:
        from plotly.offline import get_plotlyjs

        (self.out / "assets" / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
        for name in ("explorer.css", "index.js", "model.js"):
            shutil.copyfile(ASSETS / name, self.out / "assets" / name)
        by_metric = []
        if self.by_metric is not None:
            keep = ["metric", "family", "modality", "benchmark", "n_models", "pearson_r", "spearman_rho",
                    "spearman_bw_ci_low", "spearman_bw_ci_high", "cluster_bootstrap_ci_low",
                    "cluster_bootstrap_ci_high", "permutation_p"]
            df = self.by_metric[[c for c in keep if c in self.by_metric.columns]]
            by_metric = [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]
        data = {"version": EXPLORER_VERSION, "title": self.title, "pooling": self.pooling,
                "modalities": self.modalities, "by_metric": by_metric}
        n_models = sum(len(m["models"]) for m in self.modalities.values())
        body = (
            f"<h1>{_e(self.title)}</h1>\n"
            f'<p class="lead">{n_models} models; brain scores pooled as <code>{_e(self.pooling)}</code>, '
            "each with its 95% interval over subjects (t). Click a model for its layers and parcels.</p>\n"
            '<div class="controls">\n<span id="modality-tabs"></span>\n'
            '<label>metric <select id="metric"></select></label>\n'
            '<label>family <select id="family"><option value="">all</option></select></label>\n'
            '<label>class <select id="arch"><option value="">all</option></select></label>\n'
            '<label>search <input id="search" type="search" placeholder="model name"></label>\n'
            '<span id="row-count"></span>\n</div>\n'
            '<table id="leaderboard"><thead></thead><tbody></tbody></table>\n'
            "<h2>Brain score against the benchmark</h2>\n<div id=\"scatter\" class=\"chart\"></div>\n"
            '<p id="scatter-note" class="lead"></p>\n'
            "<h2>The headline by metric</h2>\n<p>Spearman's rho of brain score and benchmark over models, per "
            "metric variant, with the Bonett-Wright and family-cluster bootstrap 95% intervals and the "
            "permutation p (<code>stats/headline_by_metric.csv</code>). Click a row to show that metric.</p>\n"
            '<table id="by-metric"><thead></thead><tbody></tbody></table>\n'
        )
        (self.out / "index.html").write_text(_page(self.title, body, "", ("plotly.min.js", "index.js"), data),
                                             encoding="utf-8")


def site_size(path: Path) -> dict:
    """Files and bytes of a built site: total, the shared assets, the model pages and maps."""
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()]
    size = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    size["assets_bytes"] = sum(p.stat().st_size for p in files if p.parent.name == "assets")
    size["index_bytes"] = (path / "index.html").stat().st_size
    pages = [p for p in files if p.parent.name == "models"]
    size["model_files"], size["model_bytes"] = len(pages), sum(p.stat().st_size for p in pages)
    return size


def build_explorer(out_index: Path, modalities: Sequence[ExplorerInputs], metric: str, pooling: str,
                   registry_files: Sequence[Path] = (), ceiling_files: Sequence[Path] = (),
                   atlas: Mapping[str, Path] | None = None, by_metric: Path | None = None,
                   title: str = "brainalign results") -> dict:
    """Write the site whose front page is ``out_index`` (``.../explorer/index.html``): built in a temporary
    directory beside it, then moved into place (a failed build leaves the previous site, or nothing).
    Returns :func:`site_size`."""
    from brainalign.pipeline import merged_registry

    out_index = Path(out_index)
    final = out_index.parent
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        ceilings = None
        if ceiling_files:
            from brainalign.figures.stages import reliable_ceilings

            ceilings = reliable_ceilings([str(p) for p in ceiling_files])
        surface = None
        if atlas:
            from brainalign.figures.brainmap import load_atlas

            surface = load_atlas(Path(atlas["lh"]), Path(atlas["rh"]), Path(atlas["ctab"]))
        registry = merged_registry(registry_files) if registry_files else None
        bm = pd.read_csv(by_metric) if by_metric and Path(by_metric).exists() else None
        builder = ExplorerBuilder(tmp, metric, pooling, registry, ceilings, surface, bm, title)
        for inp in modalities:
            builder.add_modality(inp)
            log.info("%s: %d model pages", inp.modality, len(builder.modalities[inp.modality]["models"]))
        builder.finish()
        size = site_size(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / "site")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("explorer: %d files, %.1f MB (%s)", size["files"], size["bytes"] / 1e6, final)
    return size


def explorer_stage(inputs: dict, out: str | Path, params: dict) -> None:
    """The ``explorer`` rule: named inputs ``{modality}``, ``{modality}_scores``, optional
    ``{modality}_nulls``, ``by_metric``, ``ceilings``, ``registry`` and the atlas (``lh``, ``rh``, ``ctab``)."""

    def files(key):
        v = inputs.get(key) or []
        return [v] if isinstance(v, str) else list(v)

    mods = [ExplorerInputs(mod, Path(inputs[mod]), Path(inputs[f"{mod}_scores"]), params["benchmarks"][mod],
                           Path(inputs[f"{mod}_nulls"]) if inputs.get(f"{mod}_nulls") else None)
            for mod in params["modalities"] if mod in inputs]
    atlas = {k: Path(inputs[k]) for k in ("lh", "rh", "ctab")} if all(inputs.get(k) for k in ("lh", "rh", "ctab")) \
        else None
    by_metric = files("by_metric")
    build_explorer(Path(out), mods, params["metric"], params["pooling"], [Path(p) for p in files("registry")],
                   [Path(p) for p in files("ceilings")], atlas, Path(by_metric[0]) if by_metric else None)
