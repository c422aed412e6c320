"""Convert the paper's per-model scores and result tables into brainalign's own resource files.

Developer tool for the precomputed mode ("Option 2": reproduce the paper's statistics from
per-model brain scores, no fMRI), run once when the reference material changes:

    python tools/make_paper_resources.py /path/to/shared/reference

It writes, under ``src/brainalign/resources/``:

* ``paper_vision_scores.csv``: one row per vision model (594): ``model``, ``arch``
  (CNN / Transformer / Hybrid), the brain scores ``cka_20`` .. ``cka_100``, timm top-1
  (fractions) on ``imagenet, imagenet-a, imagenet-a-clean, imagenet-r, imagenet-r-clean,
  imagenet-real, imagenetv2-matched-frequency, sketch`` and ``#Params (M)`` (timm's
  ``param_count`` from ``results-imagenet.csv``).
* ``paper_language_scores.csv``: one row per language model (36): ``model``, ``cka_20`` ..
  ``cka_100``, ``Average ⬆️, IFEval, BBH, MATH Lvl 5, GPQA, MUSR, MMLU-PRO, #Params (B)`` and
  ``elo`` (Chatbot Arena; empty for the 10 models not in the Arena).
* ``paper_tables/``: the paper's result tables kept as test targets:
  ``correlation_36.csv`` (byte-for-byte copy), ``lang_corr.csv``, ``vision_corr.csv``,
  ``kernel_size_{language,vision}/28_68.csv`` and ``28_68_consistency.csv`` (copies), and
  ``brain_regions/{language,vision}.csv`` (the 0..N-1 row index dropped and floats written with
  10 significant digits, to halve their size).

The workflow and the package never read the reference directory at run time.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.resources import LANGUAGE_BENCHMARK_COLUMNS, VISION_BENCHMARK_COLUMNS

OUT = Path(__file__).resolve().parents[1] / "src" / "brainalign" / "resources"
DEFAULT_REF = Path(__file__).resolve().parents[2] / "shared" / "reference"

SIGMAS = [20, 28, 36, 44, 52, 60, 68, 76, 84, 92, 100]
CKA_COLUMNS = [f"cka_{s}" for s in SIGMAS]
VISION_BENCHMARKS = [c for c in VISION_BENCHMARK_COLUMNS if c != "#Params (M)"]
LANGUAGE_BENCHMARKS = LANGUAGE_BENCHMARK_COLUMNS
N_VISION, N_LANGUAGE = 594, 36


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"make_paper_resources: {message}")


def vision_scores(ref: Path) -> pd.DataFrame:
    """Per-model cka scores (all sigmas), architecture family and benchmark columns for 594 timm models."""
    by_kernel = pd.read_csv(ref / "paper_scores" / "vision_model_scores_by_kernel.csv")
    bench = pd.read_csv(ref / "paper_scores" / "vision_model_scores_cka36_with_benchmarks.csv")
    timm = pd.read_csv(ref / "timm_results" / "results-imagenet.csv", thousands=",")
    timm = timm[["model", "param_count"]].rename(columns={"param_count": "#Params (M)"})
    _check(not by_kernel["model"].duplicated().any(), "duplicate vision models in the by-kernel table")
    _check(not bench["model"].duplicated().any(), "duplicate vision models in the benchmark table")
    _check(set(by_kernel["model"]) == set(bench["model"]), "vision score tables list different models")
    table = by_kernel[["model", "arch", *CKA_COLUMNS]].merge(
        bench[["model", "brain_score", *VISION_BENCHMARKS]], on="model", how="left", validate="1:1"
    )
    table = table.merge(timm.drop_duplicates("model"), on="model", how="left", validate="1:1")
    _check(len(table) == N_VISION, f"expected {N_VISION} vision models, found {len(table)}")
    _check(np.allclose(table["brain_score"], table["cka_36"], rtol=0, atol=1e-12), "brain_score != cka_36 (vision)")
    top1 = by_kernel.set_index("model")["imagenet_top1"].reindex(table["model"]).to_numpy()
    _check(np.allclose(top1, table["imagenet"], rtol=0, atol=1e-6), "imagenet_top1 != imagenet (vision)")
    _check(set(table["arch"]) <= {"CNN", "Transformer", "Hybrid"}, f"unexpected arch values {set(table['arch'])}")
    _check(table[[*CKA_COLUMNS, *VISION_BENCHMARKS, "#Params (M)"]].notna().all().all(), "missing vision values")
    return table[["model", "arch", *CKA_COLUMNS, *VISION_BENCHMARKS, "#Params (M)"]]


def language_scores(ref: Path) -> pd.DataFrame:
    """Per-model cka scores (all sigmas) and Open LLM Leaderboard v2 / Arena columns for 36 language models."""
    by_kernel = pd.read_csv(ref / "paper_scores" / "language_model_scores_by_kernel.csv")
    bench = pd.read_csv(ref / "paper_scores" / "language_model_scores_cka36_with_benchmarks.csv")
    _check(not by_kernel["model"].duplicated().any(), "duplicate language models in the by-kernel table")
    _check(set(by_kernel["model"]) == set(bench["model"]), "language score tables list different models")
    table = by_kernel[["model", *CKA_COLUMNS]].merge(
        bench[["model", "brain_score", *LANGUAGE_BENCHMARKS]], on="model", how="left", validate="1:1"
    )
    _check(len(table) == N_LANGUAGE, f"expected {N_LANGUAGE} language models, found {len(table)}")
    _check(np.allclose(table["brain_score"], table["cka_36"], rtol=0, atol=1e-12), "brain_score != cka_36 (language)")
    lb_avg = by_kernel.set_index("model")["leaderboard_avg"].reindex(table["model"]).to_numpy()
    _check(np.allclose(lb_avg, table["Average ⬆️"], rtol=0, atol=1e-9), "leaderboard_avg != Average ⬆️")
    _check(table[[*CKA_COLUMNS, *LANGUAGE_BENCHMARKS[:-1]]].notna().all().all(), "missing language values")
    return table[["model", *CKA_COLUMNS, *LANGUAGE_BENCHMARKS]]


def paper_tables(ref: Path, out: Path) -> None:
    """Copy the paper's result tables (test targets) into ``out``."""
    src = ref / "paper_tables"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("correlation_36.csv", "lang_corr.csv", "vision_corr.csv"):
        shutil.copyfile(src / name, out / name)
    for modality in ("language", "vision"):
        sub = out / f"kernel_size_{modality}"
        sub.mkdir(exist_ok=True)
        for name in ("28_68.csv", "28_68_consistency.csv"):
            shutil.copyfile(src / f"kernel_size_{modality}" / name, sub / name)
        regions = pd.read_csv(src / "brain_regions" / f"{modality}.csv", index_col=0)
        _check(bool((regions.index == np.arange(len(regions))).all()), f"brain_regions/{modality}.csv: odd index")
        (out / "brain_regions").mkdir(exist_ok=True)
        regions.to_csv(out / "brain_regions" / f"{modality}.csv", index=False, float_format="%.10g")


def main(ref: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    vision_scores(ref).to_csv(OUT / "paper_vision_scores.csv", index=False)
    language_scores(ref).to_csv(OUT / "paper_language_scores.csv", index=False)
    paper_tables(ref, OUT / "paper_tables")
    print(f"wrote paper resources to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_REF)
