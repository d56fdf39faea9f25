"""The bench's results: written as JSON, drawn as a PNG, and the docs' table made from them.

``python -m bench.report [JSON] [--chart]``: prints the table of a results file (default
``var/bench/latest.json``, where ``make bench`` writes, untracked); ``--chart`` draws
``<JSON stem>.png`` beside it again. The Performance page's table is made from
``bench/results/latest.json`` by ``docs_section`` at every docs build (``make bench-publish``
copies a run there), so it is never edited by hand. ``python -m bench.run`` writes both
files (to ``var/bench/`` unless told ``--out``).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.measure import Row, with_ratios

ROOT = Path(__file__).resolve().parent.parent
#: Where ``make bench`` writes (untracked: a run never changes the checkout).
SCRATCH = ROOT / "var" / "bench" / "latest.json"
#: The published results the docs' table is made from (``make bench-publish``).
RESULTS = ROOT / "bench" / "results" / "latest.json"


def write(path: Path, rows: list[Row], meta: dict[str, Any]) -> dict[str, Any]:
    """Write the run's rows (with their ratios) and ``meta`` to ``path``; the document."""
    document = {"schema": 1, **meta, "rows": with_ratios(rows)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _by_key(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in document["rows"]}


def _figure(row: dict[str, Any]) -> str:
    value = row["per_second"]
    return f"{value:,.0f} {row['unit']}" if value >= 100 else f"{value:,.1f} {row['unit']}"


def _ratio(row: dict[str, Any]) -> str:
    return "–" if row["ratio"] is None else f"{row['ratio']:.2f}x"


def _target(row: dict[str, Any]) -> str:
    target = row.get("target")
    if target is None:
        return ""
    higher = row["better"] == "higher"
    sign = "≥" if higher else "≤"
    if row["ratio"] is None:
        return f"{sign} {target:.2f}x: not measured"
    met = row["ratio"] >= target if higher else row["ratio"] <= target
    return f"{sign} {target:.2f}x: {'met' if met else 'NOT met'}"


def markdown(document: dict[str, Any]) -> str:
    """The Markdown table of a results document."""
    rows = _by_key(document)
    lines = [
        "| row | figure | ratio | to | target | worker RSS | notes |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    for row in document["rows"]:
        base = rows.get(row["baseline"] or "")
        rss = f"{row['rss_mb']:.0f} MiB" if row.get("rss_mb") else "–"
        lines.append(
            f"| {row['name']} | {_figure(row)} | {_ratio(row)} | {base['name'] if base else ''} "
            f"| {_target(row)} | {rss} | {row['detail']} |"
        )
    return "\n".join(lines)


def text_table(document: dict[str, Any]) -> str:
    out = [f"{'row':<52} {'figure':>16} {'ratio':>7}  {'target':<18} {'RSS':>8}  notes"]
    for row in document["rows"]:
        rss = f"{row['rss_mb']:.0f} MiB" if row.get("rss_mb") else "-"
        out.append(f"{row['name'][:52]:<52} {_figure(row):>16} {_ratio(row):>7}  "
                   f"{_target(row):<18} {rss:>8}  {row['detail']}")  # fmt: skip
    return "\n".join(out)


def chart(document: dict[str, Any], png: Path) -> Path:
    """A bar per row with a ratio: the ratio (log scale, 1.0 marked), the figure written on
    the bar, the target drawn as a tick; green when the target is met, red when not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in document["rows"] if row["ratio"]]
    if not rows:
        return png
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.6))
    names = [row["name"] for row in rows][::-1]
    ratios = [row["ratio"] for row in rows][::-1]
    colours = []
    for row in rows[::-1]:
        verdict = _target(row)
        colours.append("#c0392b" if "NOT" in verdict else "#27ae60" if verdict else "#7f8c8d")
    bars = ax.barh(names, ratios, color=colours)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    for bar, row in zip(bars, rows[::-1], strict=True):
        ax.text(bar.get_width() * 1.05, bar.get_y() + bar.get_height() / 2,
                f"{row['ratio']:.2f}x  ({_figure(row)})", va="center", fontsize=8)  # fmt: skip
        if row.get("target") is not None:
            y = bar.get_y()
            ax.plot([row["target"]] * 2, [y, y + bar.get_height()], color="black", linewidth=2)
    ax.set_xlabel("ratio to its baseline in the same run (log scale; black tick: target)")
    ax.set_title(f"make bench, {document.get('finished', '')[:16]}\n"
                 f"{document.get('configuration', {}).get('summary', '')}", fontsize=9)  # fmt: skip
    ax.set_xlim(min(ratios) / 2, max(ratios) * 6)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def docs_section(document: dict[str, Any], json_path: Path, chart_link: Path) -> str:
    """The Performance page's table of a results document, and its chart."""
    return "\n".join([
        f"Generated from `{json_path.relative_to(ROOT)}` at every docs build (never edited by "
        f"hand): `{document.get('command', '')}`, finished {document.get('finished', '')}; "
        f"{document.get('configuration', {}).get('summary', '')}.",
        "",
        markdown(document),
        "",
        f"![make bench: ratios of each row]({chart_link})",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="?", type=Path, default=SCRATCH)
    parser.add_argument("--chart", action="store_true", help="draw the PNG again")
    args = parser.parse_args(argv)
    path = args.json.resolve()
    document = load(path)
    png = path.with_suffix(".png")
    if args.chart or not png.exists():
        chart(document, png)
    print(text_table(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
