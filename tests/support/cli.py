"""`medrl ...` run in the test's own process: what `python -m medrl` does (`main()`, its exit status from SystemExit,
stdout, stderr and the `medrl:` log lines), without a new interpreter importing torch for each command (seconds
each on 2 cores). Tests of the process itself (a bug's traceback, `python -m medrl --help`) still start one."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys

from medrl import cli


def medrl_here(*args: str) -> subprocess.CompletedProcess:
    """Run the command line with `args`; an exception other than SystemExit (a traceback in a real process)
    propagates and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    # What setup_logging's basicConfig gives a real process; under pytest the root logger already has handlers.
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("medrl: %(message)s"))
    root = logging.getLogger()
    level, argv, environ = root.level, sys.argv, dict(os.environ)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    sys.argv = ["medrl", *args]
    os.environ["COLUMNS"] = "200"  # as run_medrl: help and errors unwrapped
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as exited:
        code = exited.code
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)  # a command's options may become environment variables (metrics_env)
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(["medrl", *args], returncode, out.getvalue(), err.getvalue())
