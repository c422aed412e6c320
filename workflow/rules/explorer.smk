# The results explorer: one static, offline site per run (leaderboard, interactive scatter and
# score-by-metric table, a page per model), built from the tables out of core by
# brainalign.figures.explorer. Open results/explorer/index.html in a browser; the folder can be copied.


rule explorer:
    input:
        unpack(explorer_inputs),
    output:
        f"{RESULTS}/explorer/index.html",
    log:
        f"{RESULTS}/logs/explorer.log",
    benchmark:
        f"{RESULTS}/benchmarks/explorer.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: TABLE_THREADS
    params:
        metric=ANALYSIS["metric"],
        pooling=ANALYSIS["pooling"],
        benchmarks={"vision": ANALYSIS["vision_benchmark"], "language": ANALYSIS["language_benchmark"]},
        modalities=TABLE_MODALITIES,
    script:
        "../../scripts/explorer.py"
