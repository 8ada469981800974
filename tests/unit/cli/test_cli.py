"""The command line: help lists every command; bad input exits 2 naming it; a bug keeps its traceback; every
command is a thin adapter (parse, call one core function, print)."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from medrl import cli
from medrl.cli.data import data_config, prep
from medrl.config import ConfigError, DataConfig, load_config
from medrl.errors import MedrlError
from medrl.study import standalone
from tests.support.cli import medrl_here

COMMANDS = ["tiny-model", "prep", "train", "evaluate", "report", "run", "demo", "config", "doctor", "pipeline"]
COMMANDS += ["train-arm", "store", "plan"]
PIPELINE_COMMANDS = ["pipeline compile", "pipeline submit", "pipeline schedule", "pipeline runs"]
STORE_COMMANDS = ["store ls", "store get", "store put", "store verify"]
MAX_LINES = 40  # issue 11: no CLI function is longer than this, signature and options included


# A new interpreter for what only a process shows (`python -m medrl --help`, a bug's traceback); the other tests run
# the command line in this process (tests/support/cli.py), without importing torch again for each command.
def medrl(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "medrl", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_help_lists_every_command():
    out = medrl("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize(
    "command", [c for c in COMMANDS if c not in ("pipeline", "store")] + PIPELINE_COMMANDS + STORE_COMMANDS
)
def test_every_command_has_help_with_an_example(command):
    out = medrl_here(*command.split(), "--help")
    assert out.returncode == 0, out.stderr
    assert "Example: medrl" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "--preset", "nope"], "unknown preset 'nope'"),
        (["config", "--preset", "demo", "arms.sft.learning_rate=fast"], "arms.sft.learning_rate"),
        (["config", "--preset", "demo", "judge.url=http://j:8000/v1"], "judge.url: not a setting of backend keyword"),
        (["run"], "give --preset NAME or --config FILE"),
        (["run", "--like", "/tmp"], "--like /tmp: not a committed run"),
        (["prep", "--source", "nowhere", "--out", "/tmp/medrl-never"],
         "--source 'nowhere': Input should be 'synthetic', 'pmc-vqa', 'vqa-rad'"),
        (["prep", "--out", "/tmp/medrl-never", "--train-size", "0"], "--train-size '0': Input should be greater"),
        (["prep", "--out", "/tmp/medrl-never", "--cxr-tasks", "report,ct"], "--cxr-tasks 'ct': Input should be"),
        (["store", "put", "/tmp/medrl-no-such-folder", "/tmp/medrl-never"], "not a folder; give the folder"),
        (["train", "--preset", "demo", "--arm", "sft", "--data", ".", "--out", "/tmp/medrl-never", "--init", "./no"],
         "--init ./no: does not exist"),
        (["train", "--preset", "demo", "--arm", "sft", "--data", ".", "--out", "/tmp/medrl-never", "--init", "/tmp"],
         "--init /tmp: is not a model folder (no config.json)"),
        (["train", "--preset", "demo", "--data", ".", "--out", "/tmp/medrl-never"], "choose one with --arm NAME"),
        (["evaluate", "--preset", "demo", "--model", "/tmp", "--data", ".", "--out", "/tmp/medrl-never"],
         "--model /tmp: is not a model folder"),
        # issue 30: a run id that cannot name a folder, or none at all, is refused before anything is written
        (["run", "--preset", "demo", "--run-id", "a b"], "run_id 'a b': use 1-128 letters, digits"),
        (["run", "--preset", "demo", "--run-id", "x/y"], "run_id 'x/y': use 1-128 letters, digits"),
        (["run", "--preset", "demo", "--run-id", ""], "run_id '': use 1-128 letters, digits"),
        (["pipeline", "compile", "--out", "/tmp/medrl-never/study.json"], "--out /tmp/medrl-never/study.json: the "
         "pipeline compiles to a YAML package"),
    ],
)  # fmt: skip
def test_errors_name_the_input_and_exit_2(args, message):
    out = medrl_here(*args)  # in this process: an exception other than SystemExit (a traceback) fails the case
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not Path("/tmp/medrl-never").exists()


def test_a_wrong_choice_is_a_usage_error():
    out = medrl_here("tiny-model", "--arch", "nope", "--out", "/tmp/medrl-never")
    assert out.returncode == 2 and "'nope' is not one of 'qwen2-vl'" in out.stderr and "Traceback" not in out.stderr


# A stand-in for a bug: a core function raising an error medrl does not own. ValueError is the case that matters:
# `main` once turned every ValueError into a one-line "error:", hiding where a real bug came from.
BUG = """
import sys
import medrl.cli.study
def broken(*args, **kwargs):
    raise ValueError("a bug deep in the core")
medrl.cli.study.dump_config = broken
sys.argv = ["medrl", "config", "--preset", "demo"]
from medrl.cli import main
main()
"""


def test_a_bug_keeps_its_traceback_and_another_exit_status():
    out = subprocess.run([sys.executable, "-c", BUG], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ValueError: a bug deep in the core" in out.stderr
    assert "error: a bug" not in out.stderr


def test_medrls_own_errors_share_one_base():
    from medrl.cluster.launch import LaunchError
    from medrl.data.prep import PrepError
    from medrl.kfp.client import KubeflowError
    from medrl.metrics import MetricsError
    from medrl.rewards import UnscorableError
    from medrl.store import IntegrityError, StoreError

    for error in (ConfigError, PrepError, StoreError, IntegrityError, MetricsError, UnscorableError, LaunchError):
        assert issubclass(error, MedrlError), error
    assert issubclass(KubeflowError, MedrlError)
    assert issubclass(ConfigError, ValueError)  # callers that catch a bad setting as ValueError still do


def test_config_prints_resolved_yaml():
    out = medrl_here("config", "--preset", "demo", "arms.sft.epochs=3")
    assert out.returncode == 0
    assert "epochs: 3" in out.stdout


def test_prep_failure_leaves_no_directory(tmp_path):
    out = medrl_here("prep", "--source", "nowhere", "--out", str(tmp_path / "data"))
    assert out.returncode == 2
    assert list(tmp_path.iterdir()) == []


def _cli_functions():
    for path in sorted(Path(cli.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{path.name}:{node.name}", node.end_lineno - node.lineno + 1


def test_no_cli_function_is_longer_than_40_lines():
    functions = dict(_cli_functions())
    assert {"data.py:prep", "doctor.py:doctor", "train.py:train", "pipeline.py:pipeline_schedule"} <= set(functions)
    too_long = {name: lines for name, lines in functions.items() if lines > MAX_LINES}
    assert not too_long, f"move the work into the core: {too_long}"


def test_prep_options_are_datacfg_fields_with_its_defaults():
    fields = DataConfig.model_fields
    options = {p.name: p.default for p in inspect.signature(prep).parameters.values() if p.name in fields}
    assert set(options) == set(fields)  # a new data setting is an option at once
    assert data_config(options) == DataConfig()  # left out, every option is DataConfig's own default


def test_prep_option_text_becomes_the_settings_type():
    cfg = data_config({"train_size": "null", "seed": "7", "image_formats": "PNG, BMP", "yes_no_choices": False})
    assert cfg.train_size is None and cfg.seed == 7 and cfg.image_formats == ["PNG", "BMP"]
    assert cfg.yes_no_choices is False and cfg.test_size == DataConfig().test_size


def test_prep_keeps_every_row_with_null_and_writes_the_dataset(tmp_path):
    out = medrl_here(
        "prep", "--out", str(tmp_path / "d"), "--train-size", "3", "--test-size", "null", "--image-size", "28"
    )
    assert out.returncode == 0, out.stderr
    assert '"train": 3' in out.stdout and '"test": 64' in out.stdout  # synthetic: test_size null draws its 64
    assert (tmp_path / "d" / "COMMITTED").is_file()


STUDY = """
model: {base: tiny:qwen2-vl}
arms:
  zero-shot: {method: none}
  sft: {method: sft}
  grpo: {method: grpo, init: "arm:sft"}
  wide: {method: sft, model: org/other-vlm}
"""


def test_an_arm_trained_alone_starts_from_its_own_model_or_is_refused():
    cfg = load_config(text=STUDY)
    assert standalone.pick_arm(cfg, "sft") == "sft"
    with pytest.raises(ConfigError, match="--arm nope: not in the config"):
        standalone.pick_arm(cfg, "nope")
    with pytest.raises(ConfigError, match="choose one with --arm NAME"):
        standalone.pick_arm(cfg, None)
    assert (
        standalone.pick_arm(load_config(text=STUDY, arms=["zero-shot", "sft"]), None) == "sft"
    )  # the only trained one
    # a tiny base is built at a run's init, and grpo starts from the sft arm: neither exists outside a run
    with pytest.raises(ConfigError, match=r"model.base=tiny:qwen2-vl: build it first"):
        standalone.standalone_init(cfg, "sft")
    with pytest.raises(ConfigError, match=r"arms.grpo.init=arm:sft: outside a study run, give the model"):
        standalone.standalone_init(cfg, "grpo")
    assert standalone.standalone_init(cfg, "wide") == "org/other-vlm"
    cfg = load_config(text=STUDY, overrides=["model.base=org/base-vlm"])
    assert standalone.standalone_init(cfg, "sft") == "org/base-vlm"


def test_plan_prints_each_arm_and_fails_when_one_does_not_fit():
    fits = medrl_here("plan", "--preset", "paper-table1")
    assert fits.returncode == 0, fits.stderr
    assert "grpo: " in fits.stdout and "GiB of 80 GiB per GPU (fits" in fits.stdout
    tight = medrl_here("plan", "--preset", "paper-table1", "--gpus", "1", "--gpu-memory", "16")
    assert tight.returncode == 1 and "DOES NOT FIT" in tight.stdout


def test_tiny_model_keeps_a_committed_model_unless_replace(tmp_path):
    out = tmp_path / "tiny"
    assert medrl_here("tiny-model", "--out", str(out), "--seed", "1").returncode == 0
    weights = (out / "model.safetensors").read_bytes()
    again = medrl_here("tiny-model", "--out", str(out), "--seed", "2")
    assert again.returncode == 2 and "pass --replace" in again.stderr, again.stderr
    assert (out / "model.safetensors").read_bytes() == weights  # nothing lost
    assert medrl_here("tiny-model", "--out", str(out), "--seed", "2", "--replace").returncode == 0
    assert (out / "model.safetensors").read_bytes() != weights


def test_evaluate_keeps_earlier_results_unless_replace(tmp_path):
    (tmp_path / "metrics.json").write_text('{"n": 3}')
    out = medrl_here("evaluate", "--preset", "demo", "--model", "/tmp", "--data", ".", "--out", str(tmp_path))
    assert out.returncode == 2 and "metrics.json of an earlier evaluation" in out.stderr and "--replace" in out.stderr
    assert (tmp_path / "metrics.json").read_text() == '{"n": 3}'
    # with --replace the check lets it through to the next one (the model folder), before anything is written
    out = medrl_here(
        "evaluate", "--preset", "demo", "--model", "/tmp", "--data", ".", "--out", str(tmp_path), "--replace"
    )
    assert out.returncode == 2 and "--model /tmp: is not a model folder" in out.stderr
    assert (tmp_path / "metrics.json").read_text() == '{"n": 3}'
