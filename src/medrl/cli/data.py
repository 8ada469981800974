"""`medrl tiny-model` and `medrl prep`: the inputs of a study, built or prepared on their own."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, get_origin

import typer
from pydantic import ValidationError
from rich.markup import escape

from medrl import store
from medrl.cli.common import app
from medrl.config import ConfigError, DataConfig
from medrl.models.tiny import TinyArch, build_tiny


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option(help="Directory to write the checkpoint to.")],
    arch: Annotated[TinyArch, typer.Option(help="Architecture.")] = "qwen2-vl",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a model already committed at --out.")] = False,
) -> None:
    """Build a tiny model of a real architecture, with a tokenizer trained here (tests, the demo).

    Example: medrl tiny-model --arch qwen2-vl --out ./tiny-qwen2-vl
    """
    uri = store.normalize(str(out))
    store.check_replace(uri, replace, f"--out {out}: a model")
    with store.commit_dir(uri) as staging:
        build_tiny(arch, staging, seed=seed)
    typer.echo(f"tiny {arch} model written to {out}")


def prep(
    out: Annotated[str, typer.Option(help="Where the prepared dataset goes: a directory or store URI.")],
    workers: Annotated[
        int | None, typer.Option(help="Image-checking processes (default: CPU count, at most 8).")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a dataset already committed at --out.")] = False,
    **settings: str | bool,
) -> None:
    """Turn a source into a prepared dataset (train.jsonl, test.jsonl, images/, quarantine.jsonl, summary.json).

    Every other option is a setting of the study's `data:` block, with its default; `null` unsets one
    (--train-size null keeps every row), lists are comma-separated.

    Example: medrl prep --source pmc-vqa --input ./PMC-VQA --out ./data --train-size 10000 --test-size 7000 --seed 0

    Example: medrl prep --source vindr-cxr --input /data/vindr-cxr --out ./vindr --train-size 5000
    """
    from medrl.data.prep import prepare  # lazy, for medrl --help: PIL, numpy

    cfg = data_config(settings)
    store.check_replace(store.normalize(out), replace, f"--out {out}: a dataset")
    with store.commit_dir(store.normalize(out)) as staging:
        summary = prepare(cfg, staging, workers=workers)
    typer.echo(json.dumps(summary, indent=2))


def data_option(name: str) -> inspect.Parameter:
    """The option of one DataConfig field, e.g. --train-size, with the field's help and default. Values are text
    (a default too) that `data_config` turns into the field's type, so `null` can unset a field."""
    field = DataConfig.model_fields[name]
    default = field.get_default(call_default_factory=True)
    flag = "--" + name.replace("_", "-")
    kind: type[bool | str]
    if field.annotation is bool:
        kind, option = bool, typer.Option(f"{flag}/--no-{flag[2:]}")
    else:
        kind, option = str, typer.Option(flag)
        if isinstance(default, list):
            default = ",".join(map(str, default))
        else:
            default = "null" if default is None else str(default)
    option.help = escape(field.description or "")  # a description's [a, b] is text, not rich markup
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def data_config(settings: dict[str, str | bool]) -> DataConfig:
    """The DataConfig of prep's options: `null` is None, a list splits on commas, DataConfig checks the rest (and
    its errors name the flag)."""
    values: dict[str, object] = {}
    for name, value in settings.items():
        if value == "null":
            values[name] = None
        elif isinstance(value, str) and get_origin(DataConfig.model_fields[name].annotation) is list:
            values[name] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            values[name] = value
    try:
        return DataConfig(**values)
    except ValidationError as err:
        problems = [f"--{str(e['loc'][0]).replace('_', '-')} {e['input']!r}: {e['msg']}" for e in err.errors()]
        raise ConfigError("; ".join(problems) + " (see medrl prep --help)") from None


# prep's options beyond --out and --workers are DataConfig's fields, so a new data setting is an option at once.
_own = [p for p in inspect.signature(prep, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
prep.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # typeshed's functions lack it; inspect reads it
    [*_own, *(data_option(name) for name in DataConfig.model_fields)]
)
app.command()(prep)
