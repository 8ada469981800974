"""Reads back the lock files that `uv pip compile` writes (one Makefile line each: `make lock`, `make lock-gpu`) and
says, offline, whether one is still current. uv's header records the command that made the lock and its `# via`
annotations say why each package is there; both are compared with today's Makefile line and with what
pyproject.toml and the .in files ask for, so a test needs no index. Resolving is uv's job, not this module's.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKS = ("requirements.lock", "requirements-dev.lock", "requirements-slim.lock", "requirements-gpu.lock")
TARGETS = ("lock", "lock-gpu")  # the Makefile targets whose lines write them
PYPROJECT = "medrl (pyproject.toml)"  # how uv names pyproject's requirements in `# via`
# The target every lock is made for (the Makefile's --python-version / --python-platform): markers are read there.
TARGET = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}
# Options uv leaves out of the header (how it runs, where it looks, whether to upgrade), with how many values follow.
UNRECORDED = {"--quiet": 0, "-q": 0, "--upgrade": 0, "-U": 0, "--upgrade-package": 1, "-P": 1, "--find-links": 1}
PIN = re.compile(r"([A-Za-z0-9._-]+)==([^\s;]+)")


@dataclass(frozen=True)
class Lock:
    pins: dict[str, str]
    sources: dict[str, set[str]]  # why each package is there: other packages, or an input ("-r x.in", PYPROJECT, ...)
    command: tuple[str, ...]  # uv pip compile's arguments as the header records them


def read_lock(path: Path) -> dict[str, str]:
    """{name: version} of a lock's pins; comments and annotations are skipped."""
    return parse(path).pins


def parse(path: Path) -> Lock:
    pins: dict[str, str] = {}
    sources: dict[str, set[str]] = {}
    command: tuple[str, ...] = ()
    current = ""
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        if raw.startswith("#    uv pip compile "):
            command = tuple(shlex.split(raw.removeprefix("#    uv pip compile ")))
        elif raw.startswith("    #"):  # `# via a` or `# via` then one `#   a` line per source
            source = raw.strip().removeprefix("#").strip().removeprefix("via").strip()
            if source:
                sources[current].add(source)
        elif raw.strip() and not raw.startswith("#"):
            m = PIN.fullmatch(raw.strip())
            if not m:
                raise ValueError(f"{path}: line {raw!r} is not name==version")
            current = canonicalize_name(m.group(1))
            pins[current] = m.group(2)
            sources[current] = set()
    return Lock(pins, sources, command)


def _compile_args(line: str) -> tuple[str, ...]:
    """The arguments of the `uv pip compile` in one shell line, less those uv does not record in the header."""
    words = shlex.split(line)
    start = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["pip", "compile"]) + 2
    words = words[start:]
    words = words[: words.index("&&")] if "&&" in words else words
    out: list[str] = []
    skip = 0
    for word in words:
        if skip:
            skip -= 1
        elif word in UNRECORDED:
            skip = UNRECORDED[word]
        else:
            out.append(word)
    return tuple(out)


def makefile_commands(root: Path) -> dict[str, tuple[str, ...]]:
    """{lock file: the arguments its Makefile line passes to uv pip compile}, as `make -n` expands them."""
    done = subprocess.run(["make", "-n", *TARGETS], cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"make -n {' '.join(TARGETS)} failed in {root}: {done.stderr.strip()}")
    found = {}
    for line in done.stdout.splitlines():
        if " pip compile " in line:
            args = _compile_args(line)
            found[args[args.index("-o") + 1]] = args
    return found


def _requirements(path: Path) -> list[Requirement]:
    lines = (raw.split("#", 1)[0].strip() for raw in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def _options(args: tuple[str, ...], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def problems(root: Path, name: str, made_by: tuple[str, ...] | None) -> list[str]:
    """What makes lock `name` stale: made by another command than `made_by` (its Makefile line), a requirement of
    its inputs missing or at a version they rule out, a package kept for a requirement no input states any more, a
    constraint broken. Empty when current."""
    lock = parse(root / name)
    args = lock.command
    if args != made_by:
        return [f"{name} was made by `uv pip compile {shlex.join(args)}`, the Makefile now says {made_by}"]
    inputs = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or not args[i - 1].startswith("-"))]
    overrides = {canonicalize_name(r.name): r for f in _options(args, "--override") for r in _requirements(root / f)}
    asked: dict[str, set[str]] = {}  # input -> the names it requires
    out = []
    for source_file in inputs:
        if source_file == "pyproject.toml":
            project = tomllib.loads((root / source_file).read_text(encoding="utf-8"))["project"]
            extras = project.get("optional-dependencies", {})
            reqs = [Requirement(r) for r in project["dependencies"]]
            reqs += [Requirement(r) for extra in _options(args, "--extra") for r in extras[extra]]
            source = PYPROJECT
        else:
            reqs, source = _requirements(root / source_file), f"-r {source_file}"
        asked[source] = set()
        for req in reqs:
            key = canonicalize_name(req.name)
            wanted = overrides.get(key, req)
            if wanted.marker is not None and not wanted.marker.evaluate(TARGET):
                if key in lock.pins:
                    out.append(f"{name} pins {key}, which {source} with its overrides leaves out")
                continue
            asked[source].add(key)
            if key not in lock.pins:
                out.append(f"{name} lacks {wanted} ({source})")
            elif not wanted.specifier.contains(lock.pins[key], prereleases=True):
                out.append(f"{name} pins {key}=={lock.pins[key]}, {source} asks for {wanted}")
    for pinned, why in lock.sources.items():
        for reason in why:
            if reason in asked and pinned not in asked[reason]:
                out.append(f"{name} keeps {pinned} for {reason}, which no longer requires it")
            elif reason.startswith("--override ") and pinned not in overrides:
                out.append(f"{name} overrides {pinned}, which {reason.split()[1]} no longer names")
            elif not reason.startswith(("-", PYPROJECT)) and canonicalize_name(reason) not in lock.pins:
                out.append(f"{name} keeps {pinned} for {reason}, which it does not pin")
        if not why:
            out.append(f"{name} pins {pinned} for no reason it records")
    for constraints in _options(args, "-c"):
        fixed = read_lock(root / constraints)
        out += [f"{name} pins {k}=={v}, {constraints} {fixed[k]}" for k, v in lock.pins.items() if fixed.get(k, v) != v]
    return out
