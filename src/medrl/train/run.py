"""One arm, from a prepared dataset to a committed model, the same way in one process or under torchrun:
every rank trains, rank 0 alone writes the model and the log. `medrl train` (and the PyTorchJob) call this."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from medrl import store
from medrl.config import StudyConfig
from medrl.store.checkpoints import Target, latest_checkpoint, restore_once, step_of
from medrl.train import train_arm
from medrl.train.common import NonFiniteError, check_finite_weights

log = logging.getLogger("medrl")


def rank() -> int:
    """This process's global rank: torchrun and the PyTorchJob operator set RANK."""
    return int(os.environ.get("RANK", "0"))


def default_work_dir(out_uri: str) -> Path:
    """Checkpoints and the log live beside a local `--out` (`<out>.work`), so that a re-run with --resume finds
    them; for a store URI, in `scratch_work_dir`."""
    if out_uri.startswith("file://"):
        out = Path(out_uri[len("file://") :])
        return out.with_name(out.name + ".work")
    return scratch_work_dir(out_uri)


def scratch_work_dir(out_uri: str) -> Path:
    """A folder of the temp dir named after `out_uri`: the same for every rank of a node and for a retry there."""
    return Path(tempfile.gettempdir()) / "medrl-work" / hashlib.sha256(out_uri.encode()).hexdigest()[:16]


def train_to_store(
    cfg: StudyConfig,
    arm: str,
    data: str,
    out: str,
    init_ref: str,
    work: Path | None = None,
    resume: bool = False,
    upload: Target | None = None,
    replace: bool = False,
    callbacks: list | None = None,
) -> dict:
    """Train `arm` on the prepared dataset `data` into a committed model at `out` (directory or store URI); a model
    committed there already is replaced only with `replace`, once the new one is complete.

    Checkpoints go to `<work>/checkpoints` every `save_steps`, and with `upload` to the store as well; with
    `resume`, training continues from the newest committed one there (with `upload`, first brought from the store
    when it is newer), or starts at step 0 when there is none. Beside the model, `train_summary.json` holds the
    steps, the checkpoint resumed from and each rank's weights digest. After the model is committed the local
    checkpoints are removed: they exist to finish this run, not to be kept. `callbacks` join the trainer's own.
    """
    out_uri = store.normalize(out)
    store.check_replace(out_uri, replace, f"--out {out}: a model")  # also with --resume: it would start over
    if out_uri.startswith("file://"):
        # Refused now rather than at the commit, minutes or days of training later.
        store.check_output(Path(out_uri[len("file://") :]))
    data_dir = store.open_dir(store.normalize(data))
    work_dir = Path(work) if work else default_work_dir(out_uri)
    if resume and upload is not None:
        restore_once(upload.uri, work_dir)
    start = latest_checkpoint(work_dir / "checkpoints") if resume else None
    if resume:
        where = f"step {step_of(start)}" if start else "step 0 (no committed checkpoint yet)"
        log.info("arm %s: resuming from %s in %s", arm, where, work_dir / "checkpoints")
    if rank() != 0:
        with tempfile.TemporaryDirectory(prefix="medrl-rank-") as scratch:
            summary = train_arm(cfg, arm, data_dir, init_ref, Path(scratch), work_dir, start, upload, callbacks)
            summary["resumed_from"] = step_of(start) if start else None
        return summary
    # The model is written into the work folder first: until training ends, nothing exists at `out`.
    final = work_dir / "model"
    shutil.rmtree(final, ignore_errors=True)
    try:
        summary = train_arm(cfg, arm, data_dir, init_ref, final, work_dir, start, upload, callbacks)
        check_finite_weights(final, arm)
    except NonFiniteError as err:
        # The diverged model goes; the log and the checkpoints stay, on purpose: the log shows where it diverged,
        # and the checkpoints (saved only while the weights were finite) let a run resume, e.g. with a higher
        # max_nonfinite_steps after fp16 overflows.
        shutil.rmtree(final, ignore_errors=True)
        raise NonFiniteError(
            f"{err}. The training log and the checkpoints before it stay in {work_dir} (delete it when done)"
        ) from None
    summary["resumed_from"] = step_of(start) if start else None
    with store.commit_dir(out_uri) as staging:
        for path in final.iterdir():
            shutil.move(path, staging / path.name)
        (staging / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        log_file = work_dir / "train_log.jsonl"
        if log_file.exists():
            shutil.copyfile(log_file, staging / "train_log.jsonl")
    shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    return summary
