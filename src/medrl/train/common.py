"""What every training method shares: datasets in TRL's vision format, arguments, callbacks, the JSONL log and the
end of a run (the final model and each rank's weights digest)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medrl import metrics
from medrl.config import ConfigError, GrpoArm, StudyConfig, Training
from medrl.data.cxr.common import box_scale
from medrl.data.images import require_8bit
from medrl.data.prompt import prompt_messages, target_completion
from medrl.data.records import read_records
from medrl.errors import MedrlError
from medrl.store.checkpoints import Target
from medrl.train.callbacks import CheckpointCommit, CheckpointUpload, PrometheusExporter, ResumeWeights

log = logging.getLogger("medrl")


@dataclass
class Recipe:
    """What a method fills into the training skeleton (medrl.train.train_arm): TRL's config and trainer classes,
    the dataset, and the method's own keyword arguments of each."""

    config: type  # a TRL config, e.g. trl.GRPOConfig (they all extend transformers.TrainingArguments)
    trainer: type  # its trainer, e.g. trl.GRPOTrainer
    dataset: Any
    per_device_batch_size: int  # TRL's per_device_train_batch_size
    config_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def vision_dataset(cfg: StudyConfig, data_dir: Path, split: str = "train", completions: bool = False):
    """Rows with a conversational `prompt`, the `image` (decoded lazily from its file) and the answer columns
    the rewards read; with `completions`, also the SFT target as a conversational `completion`."""
    from datasets import Dataset, Image

    rows: list[dict[str, Any]] = []
    for number, rec in enumerate(read_records(data_dir, split), start=1):
        row = {
            "id": rec.id,
            "prompt": prompt_messages(rec, cfg.prompt),
            "image": training_image(rec.images, data_dir, f"row {number} of the {split} split"),
            "answer": rec.answer,
            "choices": rec.choices,
            "answer_label": rec.answer_label or "",
            # what the report and grounding rewards compare with
            "task": rec.task,
            "boxes": rec.boxes or [],
            "box_scale": box_scale(rec.meta),  # the scale the grounding question asked the boxes in
            "report": rec.report or "",
        }
        if completions:
            row["completion"] = [{"role": "assistant", "content": target_completion(rec, cfg.prompt)}]
        rows.append(row)
    # Decoded lazily by TRL's collator, whose convert("RGB") would clip a 16-bit scan to white: refuse one now.
    require_8bit((r["image"] for r in rows if r["image"]), f"the {split} split")
    return Dataset.from_list(rows).cast_column("image", Image())


def training_image(images: list[str], data_dir: Path, where: str) -> str | None:
    """The one image of a training row, or None. Training feeds a model one image per question, evaluation every image
    of the record: a question with several would be trained on its first alone, so it is refused."""
    if len(images) > 1:
        raise ConfigError(
            f"{where} has {len(images)} images; training takes one image per question (evaluation would show the "
            "model all of them). Give each image its own question, or keep the one that matters, and run medrl prep "
            "again"
        )
    return str(Path(data_dir) / images[0]) if images else None


def check_train_rows(arm: str, spec: Training, rows: int, data_dir: Path) -> None:
    """Refuse a training split with no rows, and a step larger than the split: GRPO's sampler (TRL's RepeatSampler)
    drops an incomplete batch, so it would run no step and commit the untrained model; SFT and DPO train on what
    there is (each step holds the whole split), which is worth a warning, not a refusal."""
    if rows == 0:
        raise ConfigError(
            f"{data_dir}: the train split has no rows, nothing to train arm {arm} on; prepare a dataset with "
            "training rows (medrl prep counts them in summary.json)"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    step = spec.per_device_batch_size * spec.grad_accum * world
    if rows >= step:
        return
    numbers = (
        f"arms.{arm}: a step takes per_device_batch_size {spec.per_device_batch_size} x grad_accum {spec.grad_accum} "
        f"x {world} process(es) = {step} examples, but the train split has {rows}"
    )
    if isinstance(spec, GrpoArm):  # grpo and dr_grpo
        raise ConfigError(
            f"{numbers}: GRPO would run no step (its sampler drops an incomplete batch); lower per_device_batch_size "
            "or grad_accum, or prepare more training rows"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        log.warning("%s: each step trains on all of them, a smaller batch than configured", numbers)


def trainer_args(arm: Training, work_dir: Path, per_device_batch_size: int) -> dict[str, Any]:
    """Arguments common to TRL's configs (they all extend transformers.TrainingArguments)."""
    args: dict[str, Any] = {
        "output_dir": str(work_dir / "checkpoints"),
        "learning_rate": arm.learning_rate,
        "max_steps": arm.max_steps,
        "num_train_epochs": arm.epochs,
        "per_device_train_batch_size": per_device_batch_size,
        "gradient_accumulation_steps": arm.grad_accum,
        "warmup_steps": arm.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": arm.weight_decay,
        "max_grad_norm": arm.max_grad_norm,
        "seed": arm.seed,
        "data_seed": arm.seed,
        "logging_steps": arm.logging_steps,
        "save_strategy": "steps",
        "save_steps": arm.save_steps,
        "save_total_limit": None,  # CheckpointCommit rotates, after the new checkpoint is committed
        "save_only_model": arm.save_only_model,
        # The trainer would log a non-finite step's loss as the average of the others, hiding it from NonFiniteGuard.
        "logging_nan_inf_filter": False,
        "bf16": arm.bf16,
        "gradient_checkpointing": arm.gradient_checkpointing,
        "report_to": [],
        "disable_tqdm": False,
        "use_cpu": not has_cuda(),
        "dataloader_num_workers": 0,
    }
    if arm.deepspeed:
        args["deepspeed"] = str(deepspeed_file(arm.deepspeed))
    return args


def one_rank_env(environ: MutableMapping[str, str] | None = None) -> None:
    """Make a process that no launcher started (no LOCAL_RANK) the one rank of a world of one, for DeepSpeed.

    deepspeed.initialize reads torchrun's five variables and, when one is missing, falls back to MPI discovery, which
    fails on the absent mpi4py (deepspeed/comm/comm.py, init_distributed): a single-GPU PyTorchJob (its operator sets
    RANK, WORLD_SIZE and MASTER_* but not LOCAL_RANK), a single-GPU TrainJob (PET_* only) and `medrl train` without
    torchrun. A WORLD_SIZE above 1 without LOCAL_RANK means ranks were started without a launcher: refused."""
    environ = os.environ if environ is None else environ
    if "LOCAL_RANK" in environ:
        return
    if environ.get("WORLD_SIZE", "1") != "1":
        raise ConfigError(
            f"WORLD_SIZE={environ['WORLD_SIZE']} but no LOCAL_RANK: start the ranks with torchrun or accelerate "
            "launch (or medrl train-arm, which does), or run one process without WORLD_SIZE"
        )
    with socket.socket() as s:  # a free port for the world of one's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def config_file(name: str) -> Path:
    """A launcher config shipped in the package: zero2.json (DeepSpeed), accelerate-zero2.yaml (accelerate)."""
    path = Path(str(resources.files("medrl.train") / "configs" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not shipped in medrl/train/configs; reinstall medrl")
    return path


def deepspeed_file(setting: str) -> Path:
    """The DeepSpeed JSON an arm's `deepspeed` names: `zero2` is the shipped ZeRO-2 config."""
    if setting == "zero2":
        return config_file("zero2.json")
    path = Path(setting).expanduser()
    if not path.is_file():
        raise ConfigError(f"deepspeed={setting}: no such file; give zero2 or the path of a DeepSpeed JSON config")
    try:
        zero = json.loads(path.read_text(encoding="utf-8")).get("zero_optimization") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"deepspeed={setting}: not a DeepSpeed JSON config ({err})") from None
    # Under ZeRO-3 without this setting, transformers' save_model writes an empty state dict and removes it, leaving
    # only DeepSpeed's own shards (Trainer.save_model, "stage3_gather_16bit_weights_on_model_save=false"): the arm
    # would train to the end and then have no model to commit.
    if str(zero.get("stage")) == "3" and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
        raise ConfigError(
            f"deepspeed={setting}: a ZeRO-3 config needs zero_optimization.stage3_gather_16bit_weights_on_model_save: "
            "true, or the trained model cannot be saved as whole weights; set it, or use zero2"
        )
    return path


class JsonlLog(TrainerCallback):
    """Writes each of TRL's log records (step, loss, rewards, KL, lengths...) to a JSONL file on rank 0.

    The file starts as the trainer state's history: empty for a new run; for a resumed one, the rows up to its
    checkpoint as saved in it (trainer_state.json), so the log is whole even where the earlier file is gone.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def row(step: int, logs: dict) -> dict:
        return {"step": step, **{k: v for k, v in logs.items() if k != "step" and _finite(v)}}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        rows = [self.row(e.get("step", 0), e) for e in state.log_history if e.get("step", 0) <= state.global_step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(self.row(state.global_step, logs)) + "\n")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


class NonFiniteError(MedrlError):
    """Training diverged (a non-finite loss, gradient norm or weight): nothing of it is committed."""


class NonFiniteGuard(TrainerCallback):
    """Stops training with NonFiniteError once more than `allowed` logged steps had a non-finite loss or gradient
    norm, and at the first step after which a trained weight is non-finite (no step brings such a model back).
    Every rank sees the same logged values (the loss is gathered, the norm all-reduced) and holds the same weights,
    so all stop together.
    """

    WATCHED = ("loss", "grad_norm")

    def __init__(self, arm: str, allowed: int):
        self.arm = arm
        self.allowed = allowed
        self.steps: list[int] = []
        self.bad_weight: str | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Checked after every optimizer step, before the next one uses the weights: GRPO samples its rollouts from
        # them first, and NaN weights end there in torch's sampling error before any loss is logged.
        self.bad_weight = nonfinite_weight(model) if model is not None else None
        if self.bad_weight:
            control.should_log = True  # the step's row reaches the log (JsonlLog), then on_log stops the run

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = [k for k in self.WATCHED if k in (logs or {}) and not math.isfinite(float(logs[k]))]
        if bad:
            self.steps.append(state.global_step)
        if bad and len(self.steps) > self.allowed:
            raise NonFiniteError(
                f"arm {self.arm}: non-finite {' and '.join(bad)} at step {state.global_step} (non-finite steps: "
                f"{self.steps}, max_nonfinite_steps={self.allowed}); training stopped and nothing is committed. "
                "Check the --init model and lower learning_rate, or use bf16 rather than fp16"
            )
        if self.bad_weight:
            raise NonFiniteError(
                f"arm {self.arm}: non-finite weights after step {state.global_step} ({self.bad_weight}); training "
                "stopped and nothing is committed. Lower learning_rate, or check the --init model"
            )


def nonfinite_weight(model) -> str | None:
    """The name of the first trained parameter of `model` holding NaN or infinity, else None. One reduction per
    parameter on its own device and a single transfer, so that a check per step costs little on a GPU."""
    import torch

    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad and p.numel()]
    if not params:
        return None
    device = params[0][1].device
    peaks = torch.stack([torch.linalg.vector_norm(p.detach(), ord=math.inf).float().to(device) for _, p in params])
    bad = (~torch.isfinite(peaks)).nonzero()
    return params[int(bad[0])][0] if len(bad) else None


def check_finite_weights(model_dir: Path, arm: str) -> None:
    """Raise NonFiniteError if a tensor of the safetensors files in `model_dir` holds NaN or infinity."""
    import torch
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise NonFiniteError(f"arm {arm}: no safetensors weights in {model_dir}; nothing to commit")
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensor = f.get_tensor(key)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise NonFiniteError(
                        f"arm {arm}: the trained model holds non-finite weights ({key}); it is not committed. "
                        "Check the --init model and lower learning_rate"
                    )


def training_callbacks(
    arm: str,
    work_dir: Path,
    keep: int,
    resume_from: Path | None = None,
    upload: Target | None = None,
    max_nonfinite_steps: int = 0,
    extra: list[TrainerCallback] | None = None,
) -> list[TrainerCallback]:
    """Callbacks every trainer gets: the JSONL log, the non-finite guard, local checkpoint commits (the newest `keep`
    kept), the weights of the checkpoint a run resumes from, the Prometheus exporter labelled with `arm` (/metrics
    when MEDRL_METRICS_PORT is set) and, with `upload`, the commit of each checkpoint to the store; then `extra`
    (a study's MLflow log)."""
    callbacks: list[TrainerCallback] = [
        JsonlLog(work_dir / "train_log.jsonl"),  # first: the diverged step has its row when the guard stops
        NonFiniteGuard(arm, max_nonfinite_steps),
        CheckpointCommit(keep),
    ]
    if resume_from is not None:
        callbacks.append(ResumeWeights(resume_from))
    callbacks.append(PrometheusExporter(arm, metrics.port_from_env()))
    if upload is not None:
        callbacks.append(CheckpointUpload(upload, work_dir / "checkpoint-uploads"))
    return callbacks + list(extra or [])


def weights_digest(model) -> str:
    """sha256 over the names and bytes of a model's parameters: equal digests, equal weights."""
    import torch

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_digests(model) -> list[str]:
    """Every rank's weights digest (one entry when not distributed); raises if the ranks disagree."""
    import torch.distributed as dist

    mine = weights_digest(model)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    digests: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(digests, mine)
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"ranks hold different weights after training ({len(set(digests))} distinct digests): the gradient "
            "all-reduce did not keep them in sync; check the launcher (torchrun/accelerate) and the backend"
        )
    return digests


def zero3(trainer) -> bool:
    """DeepSpeed ZeRO-3: each rank holds a shard of every weight."""
    plugin = trainer.accelerator.state.deepspeed_plugin
    return plugin is not None and plugin.zero_stage == 3


def finish(trainer, out_dir: Path, processor) -> dict:
    """Save the final model (safetensors) and processor on rank 0; return what the run did, with each rank's
    weights digest (they must agree). LoRA adapters are merged first, so every later stage loads an ordinary
    checkpoint."""
    from peft import PeftModel

    state = trainer.state
    if zero3(trainer):
        # Only the engine can gather the shards (stage3_gather_16bit_weights_on_model_save); LoRA is refused with
        # ZeRO-3 before training (medrl.train.train_arm), so its state dict has the model's own keys.
        trainer.save_model(str(out_dir))
        if trainer.is_world_process_zero():
            processor.save_pretrained(str(out_dir))
            (out_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config.yaml says it all
        return {"global_step": state.global_step, "epoch": state.epoch, "weights_sha256": []}
    # The trained module itself, not through the trainer: under DeepSpeed, trainer.save_model takes the engine's
    # state dict, which still wraps a PeftModel (every key `base_model.model.*`) even once the adapters are merged.
    # ZeRO-2 keeps whole weights on every rank, so each rank merges its own copy.
    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
        trainer.model = model
    if trainer.is_world_process_zero():
        model.save_pretrained(str(out_dir))
        processor.save_pretrained(str(out_dir))
    digests = rank_digests(model)
    return {"global_step": state.global_step, "epoch": state.epoch, "weights_sha256": digests}
