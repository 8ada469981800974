"""Local checkpoints of a training run: the trainer's `checkpoint-N` folders, each committed in the store's
format (MANIFEST.json, then a COMMITTED marker) once every rank has written its part. Resume takes the newest
committed one; a folder without the marker is a save that a crash cut short, and is never used."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from medrl.infra.store import COMMITTED, MANIFEST, StoreError, build_manifest, manifest_bytes, verify_dir

log = logging.getLogger("medrl")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int | None:
    """The step of a `checkpoint-N` folder, None for any other name.

    >>> step_of(Path("run/checkpoint-200")), step_of(Path("run/other"))
    (200, None)
    """
    m = CHECKPOINT_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_complete(path: Path, verify: bool = False) -> bool:
    """Committed: the marker holds the manifest's sha256 and every listed file is there with its size; with
    `verify`, every file's sha256 is checked too."""
    path = Path(path)
    try:
        data = (path / MANIFEST).read_bytes()
        if (path / COMMITTED).read_text().strip() != hashlib.sha256(data).hexdigest():
            return False
        files = json.loads(data)["files"]
        if not all((path / rel).is_file() and (path / rel).stat().st_size == m["size"] for rel, m in files.items()):
            return False
        if verify:
            verify_dir(path, str(path))
    except (OSError, ValueError, KeyError):
        return False
    except StoreError as err:  # verify_dir found a file that does not match its sha256
        log.warning("checkpoint %s is damaged: %s", path.name, err)
        return False
    return True


def checkpoints(directory: Path) -> list[Path]:
    """Every `checkpoint-N` folder under `directory`, oldest step first (complete or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def latest_checkpoint(directory: Path, verify: bool = False) -> Path | None:
    """The committed checkpoint with the highest step under `directory`, or None."""
    for path in reversed(checkpoints(directory)):
        if is_complete(path, verify=verify):
            return path
    return None


def commit_checkpoint(path: Path) -> None:
    """Write MANIFEST.json (size and sha256 of each file), then the COMMITTED marker, each atomically."""
    path = Path(path)
    (path / COMMITTED).unlink(missing_ok=True)
    data = manifest_bytes(build_manifest(path))
    for name, content in ((MANIFEST, data), (COMMITTED, (hashlib.sha256(data).hexdigest() + "\n").encode())):
        tmp = path / f".{name}.tmp"
        tmp.write_bytes(content)
        os.replace(tmp, path / name)


class CheckpointCommit(TrainerCallback):
    """Commits each checkpoint after every rank saved its part, then keeps the newest `keep` committed ones.

    Rotation happens here, after the commit, rather than in the trainer (which deletes before the new checkpoint
    is complete): a crash at any moment leaves at least one committed checkpoint behind.
    """

    def __init__(self, keep: int):
        self.keep = keep

    def on_train_begin(self, args, state, control, **kwargs):
        # Folders a crash left half-written would mix stale files into the next save of the same step.
        if state.is_world_process_zero:
            for path in checkpoints(Path(args.output_dir)):
                if not is_complete(path):
                    shutil.rmtree(path, ignore_errors=True)

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every rank has written its RNG state and optimizer shard
        if state.is_world_process_zero:
            commit_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            committed = [p for p in checkpoints(Path(args.output_dir)) if is_complete(p)]
            for old in committed[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        PartialState().wait_for_everyone()


def restore_weights(model, checkpoint: Path) -> None:
    """Load a checkpoint's full weights into `model` the way `from_pretrained` reads them.

    The trainer's resume reads model.safetensors with a plain, non-strict `load_state_dict`. Vision-language models
    are saved under their original key names (`model.layers.*`, where the class has `model.language_model.*`), so
    that load silently skips the language model and training would go on from the initial weights
    (transformers#43701, open in 5.23). Reading the checkpoint with `from_pretrained` applies the key conversion;
    a strict load then fails loudly if anything is still missing.
    """
    import torch

    loaded = type(model).from_pretrained(str(checkpoint), dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded


class ResumeWeights(TrainerCallback):
    """Restores the weights of the checkpoint a run resumes from, after the trainer's own (partial) load."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = Path(checkpoint)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # DeepSpeed restores the module from its own files, in the model's key names; PEFT checkpoints hold
        # adapters only, which the trainer loads through peft.
        if args.deepspeed or not (self.checkpoint / "model.safetensors").is_file():
            return
        restore_weights(model, self.checkpoint)
        log.info("resumed weights from %s (full key conversion)", self.checkpoint.name)
