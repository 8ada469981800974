"""Compile the study pipeline to YAML (`medrl pipeline compile`, `make compile`)."""

from __future__ import annotations

import os
from pathlib import Path

from kfp import compiler

from medrl.config import ConfigError
from medrl.kfp.parameters import COMPILED, pipeline_images
from medrl.pipelines.study import build


def compile_target(out: Path | None) -> Path:
    """The file `medrl pipeline compile --out` writes: a .yaml/.yml path as given, an existing folder's study.yaml.
    kfp 2 writes YAML only, so another suffix (.json, the KFP v1 format) is refused before compiling."""
    out = Path(out or COMPILED)
    if out.is_dir():
        return out / COMPILED
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(
            f"--out {out}: the pipeline compiles to a YAML package (kfp 2 writes no JSON); give a .yaml file, or "
            f"an existing folder to write {COMPILED} into"
        )
    return out


def compile_pipeline(out: Path | None = None, image: str | None = None, train_image: str | None = None) -> Path:
    """Compile the study pipeline to YAML (default: ./study.yaml): the orchestrating steps on `image`, evaluation
    and the training pods (the `image` parameter's default) on `train_image`, see `pipeline_images`."""
    out = compile_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    steps, training = pipeline_images(image, train_image)
    compiler.Compiler().compile(build(image=steps, train_image=training), str(tmp))
    os.replace(tmp, out)
    return out
