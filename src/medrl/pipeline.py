"""The pipeline adapter: compile `pipelines/study.py` to YAML and run it locally through kfp.local.

`components/` and `pipelines/` live beside `src/` in a checkout (and in the image, under MEDRL_HOME).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMPILED = "pipelines/compiled/study.yaml"


def project_root() -> Path:
    """The folder holding `pipelines/` and `components/`: MEDRL_HOME, else the checkout medrl runs from."""
    candidates = [Path(os.environ["MEDRL_HOME"])] if os.environ.get("MEDRL_HOME") else []
    candidates.append(Path(__file__).resolve().parents[2])
    for root in candidates:
        if (root / "pipelines" / "study.py").is_file() and (root / "components").is_dir():
            return root
    raise FileNotFoundError(
        "pipelines/study.py not found: run medrl from a checkout of the project, or set MEDRL_HOME to one"
    )


def _import_pipeline(parallelism: int = 0):
    root = str(project_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from pipelines.study import build

    return build(parallelism)


def compile_pipeline(out: Path | None = None, image: str | None = None) -> Path:
    """Compile the study pipeline to YAML (default: pipelines/compiled/study.yaml in the checkout)."""
    from kfp import compiler

    if image:
        os.environ["MEDRL_IMAGE"] = image
        for name in [m for m in sys.modules if m == "components" or m.startswith(("components.", "pipelines."))]:
            del sys.modules[name]
    out = Path(out) if out else project_root() / COMPILED
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    compiler.Compiler().compile(_import_pipeline(), str(tmp))
    os.replace(tmp, out)
    return out


def run_local(params: dict, pipeline_root: Path) -> None:
    """Run the study pipeline on this machine (kfp.local, subprocesses in this Python environment).

    Arms run one at a time: on a laptop, parallel training only competes for the same cores."""
    from kfp import local

    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    _import_pipeline(parallelism=1)(**params)
