"""`medrl`: the command line. Each command parses its options, calls one function of the core, and prints.

Only medrl's own errors (`medrl.errors.MedrlError`) become `error: ...` with exit status 2; any other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from medrl.cli.common import app, setup_logging
from medrl.errors import MedrlError

# Each module registers its commands on `app`; the order of these imports is the order of `medrl --help`.
# isort: off
from medrl.cli import data, train, study, pipeline, store, doctor  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    setup_logging()
    try:
        app()
    except MedrlError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
