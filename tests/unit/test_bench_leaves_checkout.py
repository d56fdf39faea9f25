"""`make bench` writes only where git does not look: a run never changes the checkout."""

import subprocess

from bench.run import FLAMES, arguments
from infra.processes import ROOT


def test_the_bench_writes_its_results_and_chart_where_git_ignores_them():
    out = arguments([]).out.resolve()
    for path in (out, out.with_suffix(".png")):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", str(path.relative_to(ROOT))], cwd=ROOT, check=False
        )
        assert ignored.returncode == 0, f"{path} would show in git status"


def test_the_flame_graphs_go_where_git_ignores_them():
    graph = FLAMES / "flame-signup-api.svg"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(graph.relative_to(ROOT))], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, f"{graph} would show in git status"
