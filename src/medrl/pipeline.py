"""The pipeline adapter: compile `pipelines/study.py` to YAML and run it locally through kfp.local.

`components/` and `pipelines/` live beside `src/` in a checkout (and in the image, under MEDRL_HOME).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMPILED = "pipelines/compiled/study.yaml"
STORE_ENV = "MEDRL_STORE"  # the site's default store, from the medrl-store ConfigMap in the cluster


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


def parameter_overrides(
    preset: str = "",
    config: str = "",
    overrides: list[str] | None = None,
    arms: str = "",
    base_model: str = "",
    dataset_source: str = "",
    dataset_uri: str = "",
    steps: int = 0,
    judge_url: str = "",
    judge_model: str = "",
) -> list[str]:
    """The pipeline's named parameters as config overrides (empty or 0: keep the preset's value), after the
    user's own `overrides`. `steps` sets max_steps of every arm that trains."""
    out = list(overrides or [])
    if base_model:
        out.append(f"model.base={base_model}")
    if dataset_source:
        out.append(f"data.source={dataset_source}")
    if dataset_uri:
        out.append(f"data.input={dataset_uri}")
    for block in ("judge", "evaluate.judge"):
        if judge_url:
            out += [f"{block}.backend=openai", f"{block}.url={judge_url}"]
        if judge_model:
            out.append(f"{block}.model={judge_model}")
    if steps < 0:
        raise ValueError(f"steps={steps}: give the optimizer steps of every trained arm, or 0 for the preset's")
    if steps:
        from medrl.config import load_config

        cfg = load_config(preset=preset or None, text=config or None, overrides=out, arms=_arm_list(arms) or None)
        out += [f"arms.{name}.max_steps={steps}" for name, arm in cfg.arms.items() if arm.method != "none"]
    return out


def _arm_list(arms: str) -> list[str]:
    return [a.strip() for a in arms.split(",") if a.strip()]


def init_from_parameters(
    preset: str = "",
    config: str = "",
    overrides: list[str] | None = None,
    store: str = "",
    run_id: str = "",
    arms: str = "",
    **named,
) -> str:
    """The pipeline's init step: named parameters become overrides, then `medrl.study.init_run`."""
    from medrl.study import init_run

    overrides = parameter_overrides(preset, config, overrides, arms, **named)
    if not store and not any(o.startswith("store=") for o in overrides):
        store = os.environ.get(STORE_ENV, "")
    return init_run(
        preset=preset or None,
        config_text=config or None,
        overrides=overrides,
        store_uri=store or None,
        run_id=run_id or None,
        arms=_arm_list(arms),
    )
