"""The study report: Table 1 (a row per arm, metrics as mean (± std)), comparisons with the baseline arm,
training curves and accuracy against reasoning length, as Markdown and as one self-contained HTML page."""

from medrl.report.arm import ArmResult
from medrl.report.build import build_report, scalar_metrics, slim_predictions, table1

__all__ = ["ArmResult", "build_report", "scalar_metrics", "slim_predictions", "table1"]
