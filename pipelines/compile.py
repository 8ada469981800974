"""Compile the study pipeline to YAML (`medrl pipeline compile`, `make compile`)."""

from __future__ import annotations

import os
from pathlib import Path

from kfp import compiler

from medrl.kfp.parameters import COMPILED, pipeline_images
from medrl.pipelines.study import build


def compile_pipeline(out: Path | None = None, image: str | None = None, train_image: str | None = None) -> Path:
    """Compile the study pipeline to YAML (default: ./study.yaml): the orchestrating steps on `image`, evaluation
    and the training pods (the `image` parameter's default) on `train_image`, see `pipeline_images`."""
    out = Path(out or COMPILED)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    steps, training = pipeline_images(image, train_image)
    compiler.Compiler().compile(build(image=steps, train_image=training), str(tmp))
    os.replace(tmp, out)
    return out
