# Figures: each family is its own target (PNG + PDF + the CSV behind it).


rule figure_performance:
    input:
        scores=score_files(),
    output:
        png=f"{RESULTS}/figures/performance/brain_score_vs_benchmark.png",
        pdf=f"{RESULTS}/figures/performance/brain_score_vs_benchmark.pdf",
        csv=f"{RESULTS}/figures/performance/brain_score_vs_benchmark.csv",
    params:
        metric=ANALYSIS["metric"],
        pooling=ANALYSIS["pooling"],
        benchmarks={"vision": ANALYSIS["vision_benchmark"], "language": ANALYSIS["language_benchmark"]},
    log:
        f"{RESULTS}/logs/figures/performance.log",
    benchmark:
        f"{RESULTS}/benchmarks/figures/performance.tsv"
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/figure_performance.py"
