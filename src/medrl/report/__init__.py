"""The study report: Table 1 (a row per arm, metrics as mean (± std)) and training curves."""

from medrl.report.build import ArmResult, build_report, table1

__all__ = ["ArmResult", "build_report", "table1"]
