"""Training that diverges stops and commits nothing: the non-finite guard's count, the weights check before a commit,
and the checkpoint settings that reach TRL's arguments."""

import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from medrl.config import ConfigError, load_config
from medrl.errors import MedrlError
from medrl.train.common import NonFiniteError, NonFiniteGuard, check_finite_weights, trainer_args


def logged(guard: NonFiniteGuard, step: int, **logs) -> None:
    state = TrainerState()
    state.global_step = step
    guard.on_log(None, state, TrainerControl(), logs=logs)


def test_the_first_non_finite_step_stops_training_by_default():
    guard = NonFiniteGuard("sft", allowed=0)
    logged(guard, 1, loss=2.5, grad_norm=1.0, learning_rate=float("nan"))  # only loss and grad_norm are watched
    with pytest.raises(NonFiniteError, match=r"arm sft: non-finite grad_norm at step 2") as err:
        logged(guard, 2, loss=2.4, grad_norm=float("inf"))
    assert isinstance(err.value, MedrlError)  # the CLI's `error: ...` and exit 2, not a traceback


def test_max_nonfinite_steps_tolerates_that_many_steps():
    guard = NonFiniteGuard("grpo", allowed=2)
    logged(guard, 3, loss=float("nan"), grad_norm=float("nan"))
    logged(guard, 4, loss=1.0, grad_norm=0.5)
    logged(guard, 7, loss=float("nan"))
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 9 \(non-finite steps: \[3, 7, 9\]"):
        logged(guard, 9, loss=float("-inf"))


def test_a_non_finite_weight_after_a_step_stops_training_once_its_row_is_logged():
    """issue 30: GRPO samples from the weights before the next loss exists, so the weights are checked after every
    optimizer step; the step's row is still logged (should_log), then the guard stops, whatever `allowed` says."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    guard, state, control = NonFiniteGuard("g", allowed=100), TrainerState(), TrainerControl()
    state.global_step = 3
    guard.on_step_end(None, state, control, model=model)
    assert not control.should_log
    guard.on_log(None, state, control, logs={"loss": 0.5})  # finite weights: nothing happens
    with torch.no_grad():
        model[1].bias[0] = float("inf")
    model[0].weight.requires_grad_(False)  # frozen weights are not looked at
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    guard.on_step_end(None, state, control, model=model)
    assert control.should_log
    with pytest.raises(NonFiniteError, match=r"arm g: non-finite weights after step 3 \(1.bias\); training stopped"):
        guard.on_log(None, state, control, logs={"loss": 0.5})


def test_weights_with_nan_are_refused_and_finite_ones_pass(tmp_path):
    save_file({"a.weight": torch.ones(3, 3), "b.index": torch.arange(4)}, tmp_path / "model.safetensors")
    check_finite_weights(tmp_path, "sft")
    poisoned = torch.ones(3, 3)
    poisoned[1, 2] = float("nan")
    save_file({"a.weight": torch.ones(3, 3)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b.weight": poisoned}, tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(NonFiniteError, match=r"arm sft: the trained model holds non-finite weights \(b.weight\)"):
        check_finite_weights(tmp_path, "sft")


def test_a_folder_without_weights_is_not_committed(tmp_path):
    with pytest.raises(NonFiniteError, match="no safetensors weights"):
        check_finite_weights(tmp_path, "sft")


def test_checkpoint_settings_reach_training_arguments(tmp_path):
    cfg = load_config(preset="demo", overrides=["arms.sft.save_only_model=true"])
    args = TrainingArguments(**trainer_args(cfg.arms["sft"], tmp_path, 2))
    assert args.save_only_model is True
    assert args.logging_nan_inf_filter is False  # a non-finite loss is logged as it is, for the guard to see
    default = load_config(preset="demo").arms["sft"]
    assert default.save_only_model is False and default.max_nonfinite_steps == 0
    assert TrainingArguments(**trainer_args(default, tmp_path, 2)).save_only_model is False


def test_deepspeed_does_not_resume_a_weights_only_checkpoint(tmp_path):
    """Refused before any model is loaded: DeepSpeed's resume needs the optimizer shards (global_step*)."""
    from medrl.train import train_arm

    cfg = load_config(preset="demo", overrides=["arms.sft.deepspeed=zero2", "arms.sft.save_only_model=true"])
    checkpoint = tmp_path / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    with pytest.raises(ConfigError, match="checkpoint-4 holds the weights only"):
        train_arm(cfg, "sft", tmp_path / "data", "tiny", tmp_path / "out", tmp_path, resume_from=checkpoint)
    (checkpoint / "global_step4").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train\.jsonl is missing"):  # past the check: the dataset is read
        train_arm(cfg, "sft", tmp_path / "data", "tiny", tmp_path / "out", tmp_path, resume_from=checkpoint)


# ------------------------------------------------------------------ the training split against the batch (issue 30)


@pytest.fixture(scope="module")
def four_rows(tmp_path_factory):
    from medrl.config import DataConfig
    from medrl.data.prep import prepare

    out = tmp_path_factory.mktemp("four") / "data"
    prepare(DataConfig(source="synthetic", train_size=4, test_size=1, seed=0), out)
    return out


def test_an_empty_train_split_is_named_before_a_model_is_loaded(four_rows, tmp_path):
    """It used to end in TRL's `StopIteration` traceback; "no-model" proves nothing was loaded."""
    from medrl.train import train_arm

    empty = tmp_path / "empty"
    shutil.copytree(four_rows, empty)
    (empty / "train.jsonl").write_text("")
    cfg = load_config(preset="demo")
    with pytest.raises(ConfigError, match=f"{empty}: the train split has no rows, nothing to train arm sft on"):
        train_arm(cfg, "sft", empty, "no-model", tmp_path / "out", tmp_path / "work")


def test_a_grpo_step_larger_than_the_split_is_refused_with_the_numbers(four_rows, tmp_path):
    """TRL's GRPO sampler drops an incomplete batch: 0 steps, and the untrained model used to be committed."""
    from medrl.train import train_arm

    cfg = load_config(preset="demo", overrides=["arms.sft-grpo.init=base"])  # demo: 8 prompts a step
    with pytest.raises(ConfigError, match=r"arms.sft-grpo: a step takes per_device_batch_size 8 x grad_accum 1 x "
                       r"1 process\(es\) = 8 examples, but the train split has 4: GRPO would run no step"):  # fmt: skip
        train_arm(cfg, "sft-grpo", four_rows, "no-model", tmp_path / "out", tmp_path / "work")


def test_an_sft_step_larger_than_the_split_is_a_warning_with_the_numbers(four_rows, caplog, monkeypatch):
    from medrl.train.common import check_train_rows

    monkeypatch.setenv("WORLD_SIZE", "2")
    spec = load_config(preset="demo").arms["sft"]  # 16 a device and step
    check_train_rows("sft", spec, 4, four_rows)
    assert "arms.sft: a step takes per_device_batch_size 16 x grad_accum 1 x 2 process(es) = 32 examples, but the " \
        "train split has 4: each step trains on all of them" in caplog.text  # fmt: skip
    caplog.clear()
    check_train_rows("sft", spec, 32, four_rows)
    assert caplog.text == ""
