"""Write the study's report to the store and show it in the Kubeflow UI."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(run_uri: str, report_md: Output[Markdown]) -> str:
    """Returns the URI of the report folder; `report_md` is the same report.md for the UI."""
    from medrl.infra import store
    from medrl.study import report as run

    uri = run(run_uri)
    with open(report_md.path, "w", encoding="utf-8") as f:
        f.write(store.read_text(uri + "/report.md"))
    return uri
