"""The peers benchmark as a chart: single-row requests a second and per core, one worker each.

    .venv/bin/python -m benchmarks.peers_bench | tee benchmarks/results/peers-<date>.txt
    .venv/bin/python -m benchmarks.peers_chart benchmarks/results/peers-<date>.txt docs/images/peers.svg

It reads the table ``benchmarks.peers_bench`` prints (the "1 process" pairing) and draws two
bar charts side by side; the documentation shows the latest run's (docs/performance.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

ROW = re.compile(r"^\| 1 process \| (?P<server>[^|]+?) \| (?P<rate>[\d,]+) \|.*\| (?P<cores>[\d.]+) \|$")


def rows(text: str) -> list[tuple[str, float, float]]:
    """(server, requests a second, cores) of each one-worker row."""
    found = []
    for line in text.splitlines():
        match = ROW.match(line.strip())
        if match:
            name = match["server"].split(" (")[0].replace("this service: ", "service: ")
            found.append((name, float(match["rate"].replace(",", "")), float(match["cores"])))
    if not found:
        raise SystemExit("no '| 1 process | ...' rows: give the output of benchmarks.peers_bench")
    return found


def draw(data: list[tuple[str, float, float]], out: Path) -> None:
    names = [name for name, _, _ in data][::-1]
    colours = ["#4a7a36" if name.startswith("service") else "#c77d1a" for name in names]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 0.42 * len(data) + 1.2), sharey=True)
    for axis, values, title in (
        (left, [rate for _, rate, _ in data][::-1], "requests a second"),
        (right, [rate / cores for _, rate, cores in data][::-1], "requests a second per core used"),
    ):
        axis.barh(names, values, color=colours)
        axis.set_title(title, fontsize=10)
        axis.grid(axis="x", alpha=0.3)
        for y, value in enumerate(values):
            axis.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
        axis.set_xlim(0, max(values) * 1.18)
    figure.suptitle("Single-row calls, one worker each (same machine, same run)", fontsize=11)
    figure.tight_layout()
    figure.savefig(out, format=out.suffix.lstrip(".") or "svg", metadata={"Date": None})


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    draw(rows(source.read_text()), out)


if __name__ == "__main__":
    main()
