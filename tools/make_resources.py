"""Convert the paper's reference tables into brainalign's own resource files.

Developer tool, run once when the reference tables change:

    python tools/make_resources.py /path/to/shared/reference

The workflow never reads the reference directory at run time; it reads the
CSV files this writes under ``src/brainalign/resources/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import yaml

from brainalign.resources import LANGUAGE_BENCHMARK_COLUMNS, VISION_BENCHMARK_COLUMNS

OUT = Path(__file__).resolve().parents[1] / "src" / "brainalign" / "resources"

VISION_BENCHMARKS = [c for c in VISION_BENCHMARK_COLUMNS if c != "#Params (M)"]
LANGUAGE_BENCHMARKS = [c for c in LANGUAGE_BENCHMARK_COLUMNS if c != "elo"]


def hcp_parcels(ref: Path) -> pd.DataFrame:
    """HCP-MMP1 parcel index (1..180, the atlas order), name and Yeo-7 network."""
    mapping = yaml.safe_load((ref / "Hcp2Yeo7.yaml").read_text())
    rows = [(i + 1, str(name), net) for i, (name, net) in enumerate(mapping.items())]
    if len(rows) != 180:
        raise SystemExit(f"Hcp2Yeo7.yaml: expected 180 parcels, found {len(rows)}")
    return pd.DataFrame(rows, columns=["index", "name", "yeo7"])


def vision_benchmarks(ref: Path) -> pd.DataFrame:
    """timm top-1 (fraction, as the paper's tables) on the 8 ImageNet-family sets."""
    table = None
    for bench in VISION_BENCHMARKS:
        df = pd.read_csv(ref / "timm_results" / f"results-{bench}.csv", thousands=",")
        df = df[["model", "top1"]].rename(columns={"top1": bench})
        df[bench] = df[bench] / 100.0
        if table is None:
            base = pd.read_csv(ref / "timm_results" / "results-imagenet.csv", thousands=",")
            table = base[["model", "param_count", "img_size"]].rename(
                columns={"param_count": "#Params (M)"}
            )
        table = table.merge(df, on="model", how="left")
    arch = pd.read_csv(ref / "paper_scores" / "vision_model_scores_by_kernel.csv")[["model", "arch"]]
    table = table.merge(arch, on="model", how="left")
    return table[["model", "arch", *VISION_BENCHMARKS, "#Params (M)", "img_size"]]


def language_benchmarks(ref: Path) -> pd.DataFrame:
    """Open LLM Leaderboard v2 (last row per model, as the paper) and Arena Elo."""
    models = pd.read_csv(ref / "language_models.csv", comment="#")
    board = pd.read_csv(ref / "open_llm_leaderboard_v2.csv")
    board = board.drop_duplicates("fullname", keep="last").rename(columns={"fullname": "model"})
    elo = json.loads((ref / "elo_results.json").read_text())
    elo = {k.replace("_", "/", 1): v for k, v in elo.items()}
    table = models.merge(board[["model", *LANGUAGE_BENCHMARKS]], on="model", how="left")
    table["elo"] = table["model"].map(elo)
    return table[["model", "gpus", "in_chatbot_arena", *LANGUAGE_BENCHMARKS, "elo"]]


def main(ref: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    hcp_parcels(ref).to_csv(OUT / "hcp_mmp1.csv", index=False)
    vision_benchmarks(ref).to_csv(OUT / "vision_benchmarks.csv", index=False)
    language_benchmarks(ref).to_csv(OUT / "language_benchmarks.csv", index=False)
    pythia = pd.read_csv(ref / "pythia_checkpoints.csv", comment="#")
    pythia.to_csv(OUT / "pythia_checkpoints.csv", index=False)
    print(f"wrote resources to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference"))
