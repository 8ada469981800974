"""Write the study's report to the store and show it in the Kubeflow UI (Markdown, HTML, scalar metrics)."""

from kfp.dsl import HTML, Markdown, Metrics, Output

from medrl.components import component


@component
def report(run_uri: str, report_md: Output[Markdown], report_html: Output[HTML], metrics: Output[Metrics]) -> str:
    """Returns the URI of the report folder; the artifacts carry the same report (and its numbers) to the UI."""
    from medrl.report.ui import export_for_ui
    from medrl.study import report as run

    uri = run(run_uri)
    for name, value in export_for_ui(uri, report_md.path, report_html.path).items():
        metrics.log_metric(name, value)
    return uri
