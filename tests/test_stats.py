"""The paper's headline statistics table, reproduced from the shipped per-model scores (no fMRI).

Fed only from the package's resource files (``paper_*_scores.csv``, ``paper_tables/``), made by
``tools/make_paper_resources.py``; nothing here reads the shared reference directory.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from brainalign.analysis import stats

P_FORMAT = re.compile(r"^<\d\.\de[+-]\d\d$")

# Rows of correlation_36.csv that the shipped scores cannot reproduce, and why.
COMBINED = 21  # "Combined (Standardized)": its definition is not published (see stats.combined_row)
VISION_SELF, VISION_AVERAGE = 19, 20  # paper: Pearson CI [nan, nan] (r = 1 + eps there), here [1.00, 1.00]
# p-value strings whose last mantissa digit differs: the scores were recovered from the paper's
# figures, so tiny rank/ulp differences remain (r, rho and CIs still agree to 2 decimals).
P_NOISE = {
    (3, "Spearman p-value"), (14, "Spearman p-value"), (20, "Spearman p-value"),
    (3, "Spearman FDR p-value"), (16, "Spearman FDR p-value"), (20, "Spearman FDR p-value"),
    (15, "FDR p-value"),  # BH rank of imagenet-real moves with the (unreproduced) Combined p-values
    (COMBINED, "FDR p-value"),  # paper's Combined p enters the family already rounded (9.4e-48)
}
P_COLUMNS = ["p-value", "FDR p-value", "Spearman p-value", "Spearman FDR p-value"]


@pytest.fixture(scope="module")
def language() -> pd.DataFrame:
    return stats.load_paper_scores("language")


@pytest.fixture(scope="module")
def vision() -> pd.DataFrame:
    return stats.load_paper_scores("vision")


@pytest.fixture(scope="module")
def target() -> pd.DataFrame:
    return stats.load_paper_target("correlation_36.csv")


@pytest.fixture(scope="module")
def numeric(language, vision) -> pd.DataFrame:
    return stats.paper_table(language, vision, score_col="cka_36")


@pytest.fixture(scope="module")
def ours(numeric) -> pd.DataFrame:
    return stats.format_table(numeric)


# --------------------------------------------------------------------------- resources

def test_shipped_scores(language, vision):
    cka = [f"cka_{s}" for s in range(20, 101, 8)]
    assert len(language) == 36 and language["model"].is_unique
    assert len(vision) == 594 and vision["model"].is_unique
    assert list(language.columns) == ["model", *cka, "Average ⬆️", "IFEval", "BBH", "MATH Lvl 5", "GPQA", "MUSR",
                                      "MMLU-PRO", "#Params (B)", "elo"]
    assert list(vision.columns) == ["model", "arch", *cka, "imagenet", "imagenet-a", "imagenet-a-clean", "imagenet-r",
                                    "imagenet-r-clean", "imagenet-real", "imagenetv2-matched-frequency", "sketch",
                                    "#Params (M)"]
    assert set(vision["arch"]) == {"CNN", "Transformer", "Hybrid"}
    assert vision["imagenet"].between(0, 1).all()  # fractions, not percent
    assert language["elo"].notna().sum() == 26
    assert language.drop(columns="elo").notna().all().all() and vision.notna().all().all()


# --------------------------------------------------------------------------- headline numbers

def test_headline_language(language):
    row = stats.correlation_table(language, ["Average ⬆️"], stats.LANGUAGE_CATEGORY, "cka_36").iloc[0]
    assert row["n"] == 36
    assert row["pearson_r"] == pytest.approx(0.885, abs=5e-4)  # SPEC: 0.8853
    assert f"{row['pearson_r']:.2f}" == "0.89"
    assert stats.format_p(row["pearson_p"]) == "<7.5e-13"


def test_headline_vision(vision):
    row = stats.correlation_table(vision, ["imagenet"], stats.VISION_CATEGORY, "cka_36").iloc[0]
    assert row["n"] == 594
    # SPEC: r = 0.5305 (0.53); the shipped scores give 0.53048, i.e. 0.531 - 5.2e-4 (0.530 to 3 decimals)
    assert row["pearson_r"] == pytest.approx(0.5305, abs=5e-4)
    assert f"{row['pearson_r']:.2f}" == "0.53"
    assert stats.format_p(row["pearson_p"]) == "<2.0e-44"


# --------------------------------------------------------------------------- the whole table

def test_layout(ours, target):
    assert list(ours.columns) == stats.PAPER_COLUMNS == list(target.columns)
    assert len(ours) == len(target) == 22
    assert list(ours["Model Category"]) == list(target["Model Category"])
    assert list(ours["Metric"]) == list(target["Metric"])
    assert [f"{v}" for v in ours["Model Count"]] == list(target["Model Count"])
    assert all(str(v) == t for v, t in zip(ours["kernel_size"], target["kernel_size"], strict=True))


@pytest.mark.parametrize("row", [i for i in range(22) if i != COMBINED])
def test_row_estimates(ours, target, row):
    """r, rho and both CIs to 2 decimals (the paper's strings), every reproducible row."""
    got, want = ours.iloc[row], target.iloc[row]
    assert got["Pearson r"] == want["Pearson r"]
    assert got["Spearman ρ"] == want["Spearman ρ"]
    assert got["Spearman 95% CI"] == want["Spearman 95% CI"]
    if row in (VISION_SELF, VISION_AVERAGE):
        assert want["95% CI"] == "[nan, nan]"
    else:
        assert got["95% CI"] == want["95% CI"]
        for a, b in zip(stats.parse_ci(got["95% CI"]), stats.parse_ci(want["95% CI"]), strict=True):
            assert abs(a - b) < 0.0051


def test_vision_self_and_average_ci(numeric, ours):
    """Documented difference: the self-correlation row has CI [1, 1] here (paper: nan), and the
    Average row's CI is the mean of the ten vision rows' CIs, as the paper computes it."""
    assert ours.iloc[VISION_SELF]["95% CI"] == "[1.00, 1.00]"
    vis = numeric[numeric["category"] == stats.VISION_CATEGORY]
    avg = numeric.iloc[VISION_AVERAGE]
    assert avg["pearson_ci_low"] == pytest.approx(vis["pearson_ci_low"].mean())
    assert avg["spearman_ci_high"] == pytest.approx(vis["spearman_ci_high"].mean())
    assert avg["pearson_p"] == pytest.approx(vis["pearson_p"].mean())


@pytest.mark.parametrize("row", [i for i in range(22) if i != COMBINED])
def test_row_pvalues(ours, target, row):
    """p-values: same format, same order of magnitude (within 12%), exact string where expected."""
    for col in P_COLUMNS:
        got, want = ours.iloc[row][col], target.iloc[row][col]
        assert P_FORMAT.match(got), got
        g, w = stats.parse_p(got), stats.parse_p(want)
        if w == 0:
            assert g == 0
            continue
        assert abs(math.log10(g) - math.log10(w)) < 0.05, (col, got, want)
        if (row, col) not in P_NOISE:
            assert got == want, (col, got, want)


def test_fdr_family_is_all_pvalues_of_the_table(numeric, target):
    """BH over all 44 p-values (Pearson + Spearman, all rows) reproduces the paper's FDR columns;
    per-category or per-statistic families do not. The paper's own Combined p-values are put in
    (that row's definition is unknown), so the ranks are the paper's."""
    t = numeric.copy()
    t.loc[COMBINED, "pearson_p"] = stats.parse_p(target.iloc[COMBINED]["p-value"])
    t.loc[COMBINED, "spearman_p"] = stats.parse_p(target.iloc[COMBINED]["Spearman p-value"])

    def mismatches(table: pd.DataFrame) -> set[tuple[int, str]]:
        f = stats.format_table(table)
        return {(i, c) for c in ("FDR p-value", "Spearman FDR p-value")
                for i in range(22) if f.iloc[i][c] != target.iloc[i][c]}

    joint = mismatches(stats.add_fdr(t))
    assert joint <= {(3, "Spearman FDR p-value"), (16, "Spearman FDR p-value"), (20, "Spearman FDR p-value"),
                     (COMBINED, "FDR p-value")}, joint
    per_category = pd.concat([stats.add_fdr(g) for _, g in t.groupby("category", sort=False)]).loc[t.index]
    assert len(mismatches(per_category)) > 20
    per_stat = t.copy()
    per_stat["pearson_p_fdr"] = stats.bh_fdr(t["pearson_p"])
    per_stat["spearman_p_fdr"] = stats.bh_fdr(t["spearman_p"])
    assert len(mismatches(per_stat)) > 20


@pytest.mark.xfail(strict=True, reason="the paper's Combined (Standardized) row is not defined; stand-in gives r=0.55")
def test_combined_row_matches_paper(ours, target):
    assert ours.iloc[COMBINED]["Pearson r"] == target.iloc[COMBINED]["Pearson r"]


def test_combined_row_stand_in(numeric):
    row = numeric.iloc[COMBINED]
    assert row["category"] == stats.COMBINED_CATEGORY and row["n"] == 630
    assert 0.5 < row["pearson_r"] < 0.6


def test_other_sigma_and_missing_values(language):
    t = stats.correlation_table(language, ["elo", "IFEval", "score"], "Language Models", score_col="cka_68")
    assert list(t["kernel_size"]) == [68, 68, 68]
    assert list(t["n"]) == [26, 36, 36]  # models without an Arena Elo are dropped for elo only
    assert t.iloc[2]["pearson_r"] == 1.0 and t.iloc[2]["pearson_p"] == 0.0
    with pytest.raises(KeyError):
        stats.correlation_table(language, ["nope"], "Language Models")


# --------------------------------------------------------------------------- primitives by hand

def test_fisher_ci_by_hand():
    # r = 0.5, n = 28: z = 0.5 ln 3, se = 1/5
    z = 0.5 * math.log(3.0)
    lo, hi = stats.fisher_ci(0.5, 28)
    def th(v):
        return (math.exp(2 * v) - 1) / (math.exp(2 * v) + 1)

    assert lo == pytest.approx(th(z - 1.96 / 5), abs=1e-12)
    assert hi == pytest.approx(th(z + 1.96 / 5), abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.156, 0.7358)
    assert stats.fisher_ci(1.0, 36) == (1.0, 1.0)
    assert all(math.isnan(v) for v in stats.fisher_ci(0.5, 3))
    # the paper's headline language interval
    assert stats.format_ci(*stats.fisher_ci(0.885306, 36)) == "[0.79, 0.94]"


def test_spearman_ci_by_hand():
    lo, hi = stats.spearman_ci(0.79, 36)
    half = 1.96 * 0.6325 / math.sqrt(35)
    assert (lo, hi) == pytest.approx((0.79 - half, 0.79 + half))
    assert stats.format_ci(lo, hi) == "[0.58, 1.00]"  # unclipped, linear
    assert stats.format_ci(*stats.spearman_ci(1.0, 36)) == "[0.79, 1.21]"
    assert stats.format_ci(*stats.spearman_ci(1.0, 594)) == "[0.95, 1.05]"
    assert stats.format_ci(*stats.spearman_ci(0.798974, 26)) == "[0.55, 1.05]"


def test_bh_fdr_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4 = .02 .02 .04 .04
    np.testing.assert_allclose(stats.bh_fdr([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    # step-up monotonicity: 0.04*4/2 = 0.08 is lowered to 0.041*4/3
    np.testing.assert_allclose(stats.bh_fdr([0.001, 0.04, 0.041, 0.9]), [0.004, 0.041 * 4 / 3, 0.041 * 4 / 3, 0.9])
    np.testing.assert_allclose(stats.bh_fdr([0.9, 0.95]), [0.95, 0.95])  # capped / monotone
    out = stats.bh_fdr([np.nan, 0.01, 0.02])  # NaN stays NaN and is not counted in m
    assert math.isnan(out[0]) and np.allclose(out[1:], [0.02, 0.02])
    np.testing.assert_allclose(stats.bh_fdr([0.0, 0.0, 0.5]), [0.0, 0.0, 0.5])
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50) ** 3
    np.testing.assert_allclose(stats.bh_fdr(p), sps.false_discovery_control(p, method="bh"))


def test_correlate_by_hand():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, np.nan]
    y = [2.0, 4.0, 5.0, 4.0, 5.0, 1.0]
    out = stats.correlate(x, y)
    assert out["n"] == 5  # the pair with a NaN is dropped
    # mean x 3, mean y 4: sxy = 6, sxx = 10, syy = 6  -> r = 6 / sqrt(60)
    r = 6 / math.sqrt(60)
    assert out["pearson_r"] == pytest.approx(r)
    t = r * math.sqrt(3 / (1 - r * r))
    assert out["pearson_p"] == pytest.approx(2 * sps.t.sf(t, 3))
    # ranks of y: 1, 2.5, 4.5, 2.5, 4.5 -> rho = Pearson of the ranks
    ry = np.array([1, 2.5, 4.5, 2.5, 4.5])
    rx = np.arange(1, 6.0)
    rho = np.sum((rx - 3) * (ry - 3)) / math.sqrt(np.sum((rx - 3) ** 2) * np.sum((ry - 3) ** 2))
    assert out["spearman_rho"] == pytest.approx(rho)
    assert (out["spearman_ci_low"], out["spearman_ci_high"]) == pytest.approx(stats.spearman_ci(rho, 5))
    assert math.isnan(stats.correlate([1, 2], [3, 4])["pearson_r"])  # n < 3
    assert math.isnan(stats.correlate([1, 1, 1], [3, 4, 5])["pearson_r"])  # constant side


def test_formatting():
    assert stats.format_p(7.521375e-13) == "<7.5e-13"  # ordinary rounding, not rounded up
    assert stats.format_p(float("nan")) == "nan"
    assert stats.format_p(1.2890e-08) == "<1.3e-08"
    assert stats.format_p(0.0) == "<0.0e+00"
    assert stats.format_p(1.562e-04) == "<1.6e-04"
    assert stats.format_ci(0.5912, 0.8812) == "[0.59, 0.88]"
    assert stats.format_ci(np.nan, np.nan) == "[nan, nan]"
    assert stats.parse_p("<3.5e-08") == 3.5e-08 and stats.parse_ci("[0.58, 1.00]") == (0.58, 1.0)
