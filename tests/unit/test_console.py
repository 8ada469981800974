"""The console of a local run: kfp.local's output split per task into log files, one line per task on screen."""

from __future__ import annotations

import importlib.util
import io
import logging
import sys
import warnings

from medrl.console import TaskConsole, library_to_log

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


def test_a_library_s_own_log_records_and_warnings_go_to_the_task_log(tmp_path, capsys):
    """kfp.local logs a loop item's expression selectors at INFO on the root logger and warns about settings the
    local runner ignores; under `library_to_log` both land in the run's logs, the console keeps its own lines."""
    library = tmp_path / "kfp"
    library.mkdir()
    (library / "chatty.py").write_text(
        "import logging, warnings\n"
        "def run():\n"
        "    logging.info(\"Applying expression selector 'parseJson(string_value)' to parent value\")\n"
        "    warnings.warn(\"Task 'train': settings ['cpu_limit'] have no effect\", UserWarning, stacklevel=1)\n"
    )
    spec = importlib.util.spec_from_file_location("chatty", library / "chatty.py")
    chatty = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chatty)
    root = logging.getLogger()
    console_handler = logging.StreamHandler(sys.stderr)  # the CLI's handler (setup_logging)
    level = root.level
    root.addHandler(console_handler)
    root.setLevel(logging.INFO)
    screen = io.StringIO()
    console = TaskConsole(tmp_path / "logs", screen, expected=1)
    shown = []  # where warnings go without library_to_log (the console)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
            with library_to_log(library, console):
                chatty.run()
                logging.getLogger("medrl").info("a line of medrl's own")
                warnings.warn("a warning of medrl's own", UserWarning, stacklevel=1)
    finally:
        root.removeHandler(console_handler)
        root.setLevel(level)
        console.close()
    err = capsys.readouterr().err
    assert "expression selector" not in err and "have no effect" not in err
    assert "a line of medrl's own" in err and shown == ["a warning of medrl's own"]
    assert screen.getvalue() == ""
    log = (tmp_path / "logs" / "pipeline.log").read_text()
    assert "INFO Applying expression selector" in log and "UserWarning: Task 'train'" in log
    assert "medrl's own" not in log
    assert not console_handler.filters and all(h is not console_handler for h in root.handlers)  # all undone
