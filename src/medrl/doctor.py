"""`medrl doctor`: a checklist of what a run needs, each failure with its fix."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


PACKAGES = ["torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "kfp", "deepspeed"]


def local_checks() -> list[Check]:
    checks = []
    for pkg in PACKAGES:
        try:
            importlib.import_module(pkg)
            checks.append(Check(f"package {pkg}", True, md.version(pkg)))
        except Exception as err:  # an import can fail in many ways; report, do not crash
            checks.append(Check(f"package {pkg}", False, type(err).__name__, "make install (or pip install -e .)"))
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    checks.append(Check("accelerator", True, f"{gpus} CUDA device(s)" if gpus else "CPU only (tiny models, demo)"))
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    checks.append(
        Check(
            "model hub",
            True,
            "offline (HF_HUB_OFFLINE=1): models load from disk or the store"
            if offline
            else "online lookups allowed; set HF_HUB_OFFLINE=1 on air-gapped clusters",
        )
    )
    try:
        from medrl.pipeline import project_root

        checks.append(Check("pipeline definition", True, str(project_root() / "pipelines" / "study.py")))
    except FileNotFoundError as err:
        checks.append(Check("pipeline definition", False, str(err), "set MEDRL_HOME to the project checkout"))
    return checks
