"""The command line: help lists every command; bad input exits non-zero with a message naming it."""

import subprocess
import sys

import pytest

COMMANDS = ["tiny-model", "prep", "train", "evaluate", "report", "run", "demo", "config", "doctor", "pipeline"]
COMMANDS += ["train-arm"]
PIPELINE_COMMANDS = ["pipeline compile", "pipeline submit", "pipeline schedule", "pipeline runs"]


def medrl(*args):
    return subprocess.run([sys.executable, "-m", "medrl", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    out = medrl("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "pipeline"] + PIPELINE_COMMANDS)
def test_every_command_has_help_with_an_example(command):
    out = medrl(*command.split(), "--help")
    assert out.returncode == 0, out.stderr
    assert "Example: medrl" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "--preset", "nope"], "unknown preset 'nope'"),
        (["config", "--preset", "demo", "arms.sft.learning_rate=fast"], "arms.sft.learning_rate"),
        (["run"], "give --preset NAME or --config FILE"),
        (["prep", "--source", "nowhere", "--out", "/tmp/medrl-never"], "unknown data source 'nowhere'"),
    ],
)
def test_errors_name_the_input_and_exit_nonzero(args, message):
    out = medrl(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_config_prints_resolved_yaml():
    out = medrl("config", "--preset", "demo", "arms.sft.epochs=3")
    assert out.returncode == 0
    assert "epochs: 3" in out.stdout


def test_prep_failure_leaves_no_directory(tmp_path):
    out = medrl("prep", "--source", "nowhere", "--out", str(tmp_path / "data"))
    assert out.returncode == 2
    assert list(tmp_path.iterdir()) == []
