"""The console of a local study run (`medrl run`, `medrl demo`): one line per pipeline task with the run's
progress, the task's arm, its status and its time; everything kfp.local prints (the executor's JSON, library
warnings, the trainers' per-step records) goes to one log file per task instead, and with --verbose to the
console too.

kfp.local brackets each task's output with "Executing task 'NAME'" and "Task 'NAME' finished with status S",
its outputs and a horizontal rule; the arm is read from the task's output URI (`.../arms/<arm>/...`). What
kfp.local itself logs (on the root logger) and warns outside those brackets goes to the log too (`library_to_log`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
START = re.compile(r"Executing task '([^']+)'")
END = re.compile(r"Task '([^']+)' finished with status (\w+)")
ARM = re.compile(r"/arms/([a-z0-9][a-z0-9_-]*)/")
RULE = re.compile(r"^-{20,}$")
BAR = 20


def stage(task: str) -> str:
    """The stage of a kfp.local task name: 'train-2-iteration-0' -> 'train'.

    >>> stage("train-2-iteration-0"), stage("arms-at-level-3"), stage("report")
    ('train', 'arms-at-level', 'report')
    """
    return re.sub(r"(-\d+)?(-iteration-\d+)?$", "", task)


class TaskConsole(io.TextIOBase):
    """A text stream to put in place of stdout while kfp.local runs: splits what it is given into
    `folder/<task>.log` and writes one summary line per finished task to `console`."""

    def __init__(self, folder: Path, console: TextIO, expected: int, verbose: bool = False):
        self.folder, self.console, self.expected, self.verbose = folder, console, max(expected, 1), verbose
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pipeline_log = (folder / "pipeline.log").open("a", encoding="utf-8")
        self.file: TextIO | None = None
        self.partial = ""
        self.done = 0
        self.started = time.monotonic()
        self.task_started = self.started
        self.finished: dict | None = None  # the task that ended, until its outputs have been read
        self.failed: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.verbose:
            self.console.write(text)
        self.partial += text
        while "\n" in self.partial:
            line, self.partial = self.partial.split("\n", 1)
            self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.console.flush()

    def _line(self, line: str) -> None:
        if m := START.search(line):
            self._summarise()
            self.task_started = time.monotonic()
            self.file = (self.folder / f"{m.group(1)}.log").open("a", encoding="utf-8")
        (self.file or self.pipeline_log).write(line + "\n")
        if m := END.search(line):
            self.finished = {"task": m.group(1), "status": m.group(2), "seconds": time.monotonic() - self.task_started}
        elif self.finished and "arm" not in self.finished and (m := ARM.search(line)):
            self.finished["arm"] = m.group(1)
        elif self.finished and RULE.match(line.strip()):
            self._summarise()

    def _summarise(self) -> None:
        if self.finished is None:
            return
        task, status = self.finished["task"], self.finished["status"].lower()
        self.done += 1
        filled = min(BAR, BAR * self.done // self.expected)
        bar = "#" * filled + "." * (BAR - filled)
        arm, seconds = self.finished.get("arm", ""), self.finished["seconds"]
        line = f"[{bar}] {stage(task):<14} {arm:<18} {status:<8} {seconds:7.1f} s"
        if status != "success":
            self.failed.append(task)
            line += f"   log: {self.folder / task}.log"
        if not self.verbose:
            self.console.write(line + "\n")
            self.console.flush()
        self.finished = None
        if self.file:
            self.file.close()
            self.file = None

    def close(self) -> None:
        if self.partial:
            self._line(ANSI.sub("", self.partial))
            self.partial = ""
        self._summarise()
        if self.file:
            self.file.close()
        self.pipeline_log.close()
        super().close()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class FromFolder(logging.Filter):
    """Keeps the records logged by code under `folder` (`inside`), or all the others."""

    def __init__(self, folder: str, inside: bool):
        super().__init__()
        self.folder, self.inside = folder, inside

    def filter(self, record: logging.LogRecord) -> bool:
        return record.pathname.startswith(self.folder) == self.inside


@contextlib.contextmanager
def library_to_log(folder: Path, stream: io.TextIOBase | TextIO) -> Iterator[None]:
    """Log records and warnings raised by code under `folder` (kfp's package: its loop items' "Applying expression
    selector" INFO lines, logged on the root logger, and its warnings about settings a local runner ignores) are
    written to `stream` (a TaskConsole: the run's logs/) instead of the console; everything else is left alone."""
    where = str(folder)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(FromFolder(where, inside=True))
    root = logging.getLogger()
    others = [(h, FromFolder(where, inside=False)) for h in root.handlers]
    for h, f in others:
        h.addFilter(f)
    root.addHandler(handler)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(where):
            stream.write(warnings.formatwarning(message, category, filename, lineno, line))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
        root.removeHandler(handler)
        for h, f in others:
            h.removeFilter(f)
