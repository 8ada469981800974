"""The report for the Kubeflow UI: its Markdown (tables; the figures live in the HTML), the self-contained HTML,
and the headline numbers as scalar metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

from medrl import store
from medrl.report.build import scalar_metrics

FIGURE_LINE = re.compile(r"^!\[[^\]]*\]\(figures/[^)]*\)\n\n\*[^\n]*\*\n", re.MULTILINE)


def export_for_ui(report_uri: str, markdown_path: str | Path, html_path: str | Path) -> dict[str, float]:
    """Copy the report into Kubeflow's output artifact files; return `<arm>_<metric>` numbers to log."""
    markdown = store.read_text(store.join(report_uri, "report.md"))
    # The UI's Markdown viewer cannot open files beside report.md: point to the HTML artifact instead.
    markdown = FIGURE_LINE.sub("(figure: see the HTML report)\n", markdown)
    Path(markdown_path).write_text(markdown, encoding="utf-8")
    Path(html_path).write_bytes(store.read_bytes(store.join(report_uri, "report.html")))
    return scalar_metrics(json.loads(store.read_text(store.join(report_uri, "summary.json"))))
