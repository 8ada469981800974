"""The console of a local run: kfp.local's output split per task into log files, one line per task on screen."""

from __future__ import annotations

import io

from medrl.console import TaskConsole

KFP = """\
\x1b[36m12:00:00.001 - INFO - Executing task \x1b[36m'init-run'\x1b[0m
12:00:00.002 - INFO - Streamed logs:

    {"executor": "json noise"}
12:00:01.000 - INFO - Task 'init-run' finished with status \x1b[32mSUCCESS\x1b[0m
12:00:01.001 - INFO - Task 'init-run' outputs:
    Output: 'file:///runs/demo/r1'
--------------------------------------------------------------------------------
12:00:01.002 - INFO - Executing task 'train-2-iteration-0'
    {'loss': 1.2, 'grad_norm': 0.3, 'epoch': 1.0}
    UserWarning: something a library says
12:00:05.000 - INFO - Task 'train-2-iteration-0' finished with status FAILURE
    Output: 'file:///runs/demo/r1/arms/sft-grpo/model'
--------------------------------------------------------------------------------
"""


def test_each_task_gets_a_log_file_and_one_console_line(tmp_path):
    screen = io.StringIO()
    console = TaskConsole(tmp_path / "logs", screen, expected=2)
    for chunk in (KFP[:50], KFP[50:333], KFP[333:]):  # kfp prints in pieces, not lines
        console.write(chunk)
    console.close()
    lines = screen.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("[##########..........] init-run") and " success " in lines[0]
    assert " train " in lines[1] and "sft-grpo" in lines[1] and " failure " in lines[1]
    assert lines[1].endswith(f"log: {tmp_path / 'logs' / 'train-2-iteration-0'}.log")
    assert console.failed == ["train-2-iteration-0"]
    train_log = (tmp_path / "logs" / "train-2-iteration-0.log").read_text()
    assert "'grad_norm'" in train_log and "UserWarning" in train_log and "json noise" not in train_log
    assert "json noise" in (tmp_path / "logs" / "init-run.log").read_text()
    assert "\x1b[" not in train_log  # colour codes stripped


def test_verbose_passes_everything_through(tmp_path):
    screen = io.StringIO()
    console = TaskConsole(tmp_path / "logs", screen, expected=2, verbose=True)
    console.write(KFP)
    console.close()
    assert screen.getvalue() == KFP
    assert (tmp_path / "logs" / "train-2-iteration-0.log").is_file()
