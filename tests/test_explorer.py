"""The results explorer (brainalign.figures.explorer): its numbers against independent computations, the
escaping of every name, atomic builds, and the demo's site in a real browser (headless Chromium)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainalign.bench.synthetic import write_tables
from brainalign.figures import explorer
from brainalign.io import InputError
from brainalign.pipeline import measured_model_scores

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ["<b>x</b>", "it's \"q\" & <script>alert(1)</script>", "a/b@c"]
POOLING = "max_roi_mean_layer"


def _tool():
    spec = importlib.util.spec_from_file_location("explorer_screenshots", REPO / "tools" / "explorer_screenshots.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="session")
def small_site(tmp_path_factory):
    """A site built from small synthetic tables whose vision models include hostile names (session-scoped, not
    module-scoped: a module fixture would hold this module's tests on one xdist worker, the demo's with them)."""
    root = tmp_path_factory.mktemp("explorer")
    write_tables(root, 6, 2, ["cka_36", "mutual_knn_20"], n_subjects=3, n_rois=10, seed=5, trained=False)
    vision = pd.read_parquet(root / "vision_all.parquet")
    old = list(dict.fromkeys(vision["src_model"].astype(str)))[: len(HOSTILE)]
    vision["src_model"] = vision["src_model"].astype(str).replace(dict(zip(old, HOSTILE, strict=True)))
    vision.to_parquet(root / "vision_all.parquet", index=False)
    inputs = []
    for mod, bench in (("vision", "imagenet"), ("language", "Average ⬆️")):
        measured_model_scores(str(root / f"{mod}_all.parquet"), POOLING, str(root / f"scores_{mod}.csv"), None, mod)
        inputs.append(explorer.ExplorerInputs(mod, root / f"{mod}_all.parquet", root / f"scores_{mod}.csv", bench))
    size = explorer.build_explorer(root / "site" / "index.html", inputs, "cka_36", POOLING)
    return root, size


def _data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text, re.S)
    assert m, page
    return json.loads(m.group(1))


def test_subject_interval_is_students_t_interval():
    for values in ([0.3, 0.5, 0.4, 0.45], [0.1, 0.2], [0.2, 0.3, 0.1, 0.5, 0.25, 0.4, 0.33, 0.31, 0.29, 0.6, 0.1]):
        v = np.asarray(values)
        lo, hi = stats.t.interval(0.95, v.size - 1, loc=v.mean(), scale=stats.sem(v))
        mean, got_lo, got_hi, n = explorer.subject_interval(values)
        assert n == v.size and mean == pytest.approx(v.mean(), abs=1e-15)
        assert (got_lo, got_hi) == pytest.approx((lo, hi), abs=1e-12)
    mean, lo, hi, n = explorer.subject_interval([0.4, float("nan")])
    assert (mean, n) == (0.4, 1) and np.isnan(lo) and np.isnan(hi)


def test_leaderboard_scores_equal_an_independent_pooling(small_site):
    """Per (metric, model): max over parcels, mean over layers, per subject (the pooling), then the mean
    over subjects: from the raw rows with pandas, and equal to the workflow's model_scores."""
    root, _ = small_site
    got = explorer.leaderboard_scores(root / "vision_all.parquet", ["cka_36", "mutual_knn_20"], POOLING)
    raw = pd.read_parquet(root / "vision_all.parquet")
    raw = raw.astype({"src_model": str, "tgt_model": str, "metric": str})
    per_layer = raw.groupby(["metric", "src_model", "tgt_model", "src_feature"])["score"].max()
    per_subject = per_layer.groupby(["metric", "src_model", "tgt_model"]).mean()
    want = per_subject.groupby(["metric", "src_model"]).agg(["mean", "std", "count"])
    merged = got.set_index(["metric", "src_model"]).join(want, how="outer")
    assert len(merged) == 2 * 6 and merged["score"].notna().all()
    np.testing.assert_allclose(merged["score"], merged["mean"], rtol=0, atol=1e-12)
    half = stats.t.ppf(0.975, merged["count"] - 1) * merged["std"] / np.sqrt(merged["count"])
    np.testing.assert_allclose(merged["high"] - merged["score"], half, rtol=1e-12)
    assert (merged["n_subjects"] == 3).all()
    scores = pd.read_csv(root / "scores_vision.csv").set_index("model")
    for metric in ("cka_36", "mutual_knn_20"):
        sub = got[got["metric"] == metric].set_index("src_model")["score"]
        np.testing.assert_allclose(sub.sort_index(), scores.loc[sub.index, metric].sort_index(), rtol=0, atol=1e-12)


def test_model_pages_hold_the_layer_by_parcel_means(small_site):
    root, size = small_site
    site = root / "site"
    index = _data(site / "index.html")
    vision = index["modalities"]["vision"]
    assert set(HOSTILE) <= {m["model"] for m in vision["models"]} and len(vision["models"]) == 6
    assert size["model_files"] == 8 and len(list((site / "models").glob("*.html"))) == 8
    raw = pd.read_parquet(root / "vision_all.parquet").astype({"src_model": str, "tgt_feature": str, "metric": str})
    for row in vision["models"]:
        page = _data(site / "models" / row["page"])
        assert page["model"] == row["model"] and page["metric"] == "cka_36"
        want = (raw[(raw["src_model"] == row["model"]) & (raw["metric"] == "cka_36")]
                .groupby(["src_feature", "tgt_feature"])["score"].mean().unstack())
        assert page["layers"] == list(want.index) and page["parcels"] == list(want.columns)
        np.testing.assert_allclose(np.array(page["matrix"], dtype=float), want.to_numpy(), rtol=0, atol=1e-6)
        assert len(page["parcel_rows"]) == 10
        best = want.max(axis=0)
        np.testing.assert_allclose([r["score"] for r in page["parcel_rows"]], best.to_numpy(), atol=1e-6)
    # rank in family: the family's models ordered by the index's brain score
    cells = vision["scores"]["cka_36"]
    fam = {}
    for row, cell in zip(vision["models"], cells, strict=True):
        fam.setdefault(row["family"], []).append((cell[0], row["model"]))
    for members in fam.values():
        for k, (_, model) in enumerate(sorted(members, reverse=True), start=1):
            page = next(r["page"] for r in vision["models"] if r["model"] == model)
            text = (site / "models" / page).read_text(encoding="utf-8")
            assert f"<dt>rank in family</dt><dd>{k} of {len(members)}</dd>" in text


def test_every_name_is_escaped_and_links_are_relative(small_site):
    root, _ = small_site
    site = root / "site"
    for page in [site / "index.html", *(site / "models").glob("*.html")]:
        text = page.read_text(encoding="utf-8")
        assert "<b>x</b>" not in text and "<script>alert" not in text, page
        for link in re.findall(r'(?:href|src)="([^"]*)"', text):
            assert not re.match(r"^(/|[a-z]+:)", link) or link == "data:,", (page, link)
            if not link.startswith("data:"):
                assert (page.parent / link).exists(), (page, link)
    pages = {explorer.model_page(n) for n in HOSTILE}
    assert len(pages) == len(HOSTILE) and all(re.fullmatch(r"[A-Za-z0-9._-]+\.html", p) for p in pages)
    assert explorer.model_page("a/b") != explorer.model_page("a_b")
    hostile = _data(site / "models" / explorer.model_page(HOSTILE[1]))
    assert hostile["model"] == HOSTILE[1]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (site / "models" / explorer.model_page(HOSTILE[1])).read_text()


def test_a_failed_build_keeps_the_previous_site(small_site, tmp_path):
    root, _ = small_site
    site = tmp_path / "explorer"
    shutil.copytree(root / "site", site)
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    bad = explorer.ExplorerInputs("vision", root / "vision_all.parquet", tmp_path / "bad.csv", "imagenet")
    with pytest.raises(InputError, match="bad.csv: no column 'model'"):
        explorer.build_explorer(site / "index.html", [bad], "cka_36", POOLING)
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------- in a browser

@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through its WebDriver (Debian's chromium and chromium-driver, installed by
    tools/install_browser.sh where missing)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        proc = subprocess.run(["bash", str(REPO / "tools" / "install_browser.sh")], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"no headless Chromium: {proc.stderr.strip().splitlines()[-1:]}")
    driver = _tool().open_browser()
    yield driver
    driver.quit()


def _errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def test_hostile_names_show_as_text_and_their_pages_open(small_site, browser):
    from selenium.webdriver.common.by import By

    root, _ = small_site
    for name in HOSTILE:
        browser.get((root / "site" / "index.html").as_uri())
        search = browser.find_element(By.ID, "search")
        search.send_keys(name)
        rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
        assert [r.find_element(By.CSS_SELECTOR, "a").text for r in rows] == [name]
        rows[0].find_element(By.CSS_SELECTOR, "a").click()
        assert browser.find_element(By.ID, "model-name").text == name
        assert browser.title == f"{name} - brainalign"
        assert not _errors(browser)


@pytest.mark.workflow
def test_demo_explorer_in_headless_chromium(demo_run, browser, tmp_path):
    """The demo's explorer, opened from a copy of its folder: no console error, one row per model, sorting
    by brain score, searching a model and following its link to its page (layers, parcels)."""
    from selenium.webdriver.common.by import By

    copy = tmp_path / "copied_explorer"  # relative links only: the folder works anywhere
    shutil.copytree(demo_run / "results/explorer", copy)
    index = _data(copy / "index.html")
    models = {mod: [m["model"] for m in d["models"]] for mod, d in index["modalities"].items()}
    vision_table = pd.read_parquet(demo_run / "results/tables/vision_all.parquet", columns=["src_model"])
    assert set(models["vision"]) == set(vision_table["src_model"].astype(str))
    browser.get((copy / "index.html").as_uri())
    assert not _errors(browser)
    for mod in ("language", "vision"):
        browser.find_element(By.ID, f"tab-{mod}").click()
        rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
        assert len(rows) == len(models[mod]), mod

    def scores():
        return [float(r.get_attribute("data-score")) for r in
                browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]

    browser.find_element(By.ID, "sort-model").click()
    browser.find_element(By.ID, "sort-score").click()  # numbers sort descending first
    first = scores()
    assert first == sorted(first, reverse=True) and first[0] > first[-1]
    browser.find_element(By.ID, "sort-score").click()
    assert scores() == sorted(first)
    cells = index["modalities"]["vision"]["scores"][index["modalities"]["vision"]["metric"]]
    plotted = [m for m, c in zip(index["modalities"]["vision"]["models"], cells, strict=True)
               if m["benchmark"] is not None and c[0] is not None]
    assert 0 < len(plotted) < len(models["vision"])  # the demo's own CNNs have no ImageNet score
    assert len(browser.find_elements(By.CSS_SELECTOR, "#scatter .point")) == len(plotted)
    assert browser.find_element(By.ID, "scatter-note").text.startswith(f"{len(models['vision']) - len(plotted)} ")

    target = "tf_efficientnet_lite1"
    browser.find_element(By.ID, "search").send_keys(target)
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
    assert [r.get_attribute("data-model") for r in rows] == [target]
    rows[0].find_element(By.CSS_SELECTOR, "a").click()
    assert browser.find_element(By.ID, "model-name").text == target
    table = pd.read_parquet(demo_run / "results/tables/vision_all.parquet", columns=["src_model", "src_feature",
                                                                                      "tgt_feature"])
    mine = table[table["src_model"].astype(str) == target]
    assert int(browser.find_element(By.ID, "n-layers").text) == mine["src_feature"].nunique()
    parcels = [r.find_element(By.CSS_SELECTOR, "td").text
               for r in browser.find_elements(By.CSS_SELECTOR, "#parcels tbody tr")]
    assert sorted(parcels) == sorted(mine["tgt_feature"].astype(str).unique())
    assert browser.find_elements(By.CSS_SELECTOR, "#heatmap .hm, #heatmap canvas, #heatmap image")
    assert browser.find_element(By.ID, "brain-map").get_attribute("naturalWidth") not in (None, "0")
    assert not _errors(browser)
    browser.find_element(By.ID, "home").click()
    assert browser.find_element(By.ID, "leaderboard")
    shots = _tool().screenshots(browser, copy / "index.html", tmp_path / "shots", target)
    assert all(p.stat().st_size > 10_000 for p in shots)
