#!/usr/bin/env python3
"""Draws the evaluation figures with gnuplot from hapi-evaluate's CSVs.

Usage: plot_evaluation.py OUT_DIR   (reads sweep-mean.csv, sweep-p95.csv,
lightweight.csv; writes accuracy-vs-budget-*.svg, exit-distribution.svg,
pareto.svg next to them)."""
import csv
import os
import subprocess
import sys

out = sys.argv[1]


def rows(name):
    path = os.path.join(out, name)
    return list(csv.DictReader(open(path))) if os.path.exists(path) else []


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


schemes = []
for stat in ("mean", "p95"):
    data = [r for r in rows(f"sweep-{stat}.csv") if r["test_accuracy"]]
    if not data:
        continue
    schemes = list(dict.fromkeys(r["scheme"] for r in data))
    blocks = []
    for s in schemes:
        pts = [(float(r["budget_ms"]), 100 * float(r["test_accuracy"])) for r in data if r["scheme"] == s]
        blocks.append("\n".join(f"{x} {y}" for x, y in pts) + "\ne")
    plots = ", ".join(f"'-' using 1:2 with linespoints title '{s}'" for s in schemes)
    gnuplot(f"""set terminal svg size 900,540 dynamic background rgb 'white'
set output '{out}/accuracy-vs-budget-{stat}.svg'
set title 'Test accuracy of the design each scheme picks, by {stat}-latency budget'
set xlabel '{stat} latency budget (ms, predicted on validation)'
set ylabel 'test accuracy (%)'
set key bottom right
set grid
plot {plots}
""" + "\n".join(blocks) + "\n")

# Exit distribution of the designs hapi chose (mean sweep), stacked.
data = [r for r in rows("sweep-mean.csv") if r["scheme"] == "hapi" and r["test_exit_ratios"]]
if data:
    n_exits = len(data[0]["test_exit_ratios"].split())
    lines = []
    for r in data:
        ratios = [float(x) for x in r["test_exit_ratios"].split()]
        lines.append(f"{float(r['budget_ms']):.3f} " + " ".join(f"{100*x:.2f}" for x in ratios))
    cols = " ".join(str(i) for i in range(n_exits))
    plots = ", ".join(
        f"'-' using {i + 2}:xtic(1) title '{'final' if i == n_exits - 1 else 'exit ' + str(i)}'"
        for i in range(n_exits))
    body = "\n".join(("\n".join(lines) + "\ne") for _ in range(n_exits))
    gnuplot(f"""set terminal svg size 900,540 dynamic background rgb 'white'
set output '{out}/exit-distribution.svg'
set title 'Where test samples leave, for the design hapi picks at each mean-latency budget'
set style data histograms
set style histogram rowstacked
set style fill solid 0.8 border -1
set boxwidth 0.8
set xtics rotate by -45
set xlabel 'mean latency budget (ms)'
set ylabel 'share of test samples (%)'
set yrange [0:100]
set key outside right
plot {plots}
{body}
""")

# Accuracy vs measured latency: every scheme's chosen designs, lightweight models.
data = [r for r in rows("sweep-mean.csv") if r["test_accuracy"]]
light = rows("lightweight.csv")
if data:
    blocks, plots = [], []
    for s in schemes:
        pts = sorted((float(r["measured_mean_ms"]), 100 * float(r["test_accuracy"])) for r in data if r["scheme"] == s)
        blocks.append("\n".join(f"{x} {y}" for x, y in pts) + "\ne")
        plots.append(f"'-' using 1:2 with linespoints title '{s}'")
    for l in light:
        blocks.append(f"{float(l['measured_mean_ms'])} {100 * float(l['test_accuracy'])}\ne")
        plots.append(f"'-' using 1:2 with points pt 5 ps 1.5 title '{l['model']} (no exits)'")
    gnuplot(f"""set terminal svg size 900,540 dynamic background rgb 'white'
set output '{out}/pareto.svg'
set title 'Test accuracy vs measured mean latency (batch 1, this machine)'
set xlabel 'measured mean latency (ms)'
set ylabel 'test accuracy (%)'
set key bottom right
set grid
plot {", ".join(plots)}
""" + "\n".join(blocks) + "\n")
print(f"figures written to {out}")
