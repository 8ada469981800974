"""`medrl store ...`: list, download, upload and verify the artifacts of the store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from medrl import store
from medrl.cli.common import store_app


@store_app.command("ls")
def store_ls(uri: Annotated[str, typer.Argument(help="A store URI (s3://bucket/prefix, file:///path) or a path.")]):
    """List what lies under a URI; committed artifacts show their file count and size.

    Example: medrl store ls s3://medrl/medrl/20261121-120000-ab12/arms/grpo/checkpoints
    """

    entries = store.ls(store.normalize(uri))
    if not entries:
        typer.echo(f"nothing under {uri}")
    for e in entries:
        if e["kind"] == "committed":
            typer.echo(f"{e['name'] + '/':<32} committed  {e['files']:>6} files  {_size(e['bytes']):>10}")
        elif e["kind"] == "folder":
            typer.echo(f"{e['name'] + '/':<32} folder (not committed)")
        elif e["kind"] == "damaged":
            typer.echo(f"{e['name'] + '/':<32} DAMAGED    {e['error']}")
        else:
            typer.echo(e["name"])


@store_app.command("get")
def store_get(
    uri: Annotated[str, typer.Argument(help="A committed artifact or a single object.")],
    dest: Annotated[Path, typer.Argument(help="Local directory (artifact) or file (object) to write.")],
    replace: Annotated[bool, typer.Option(help="Replace a committed artifact already at DEST.")] = False,
):
    """Download a committed artifact (every file checked against its sha256) or one object.

    Example: medrl store get s3://medrl/medrl/20261121-120000-ab12/arms/grpo/model ./grpo-model
    """

    uri = store.normalize(uri)
    if store.is_committed(uri):
        if store.is_artifact(dest) and not replace:
            # A model or dataset there may have cost GPU-hours: as `store put`, replace it only when asked.
            raise store.OutputError(f"medrl store get: {dest} is a committed artifact; pass --replace to replace it")
        store.download(uri, dest)
        typer.echo(f"{uri} -> {dest}/ (verified)")
    else:
        if dest.exists() or dest.is_symlink():
            raise store.OutputError(f"{dest} exists; medrl never replaces what it did not write: give a new path")
        data = store.read_bytes(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        typer.echo(f"{uri} -> {dest} ({_size(len(data))})")


@store_app.command("put")
def store_put(
    src: Annotated[Path, typer.Argument(help="A local folder: a dataset as downloaded, a model's weights.")],
    uri: Annotated[str, typer.Argument(help="Where it goes (s3://bucket/prefix or file:///path).")],
    replace: Annotated[bool, typer.Option(help="Replace an artifact already committed at the URI.")] = False,
):
    """Commit a local folder to the store as one artifact (every file's sha256 in its MANIFEST.json), e.g. a
    dataset that `medrl prep --input <uri>` then reads, or base-model weights for `model.base=<uri>`.

    Example: medrl store put ./PMC-VQA s3://medrl/datasets/pmc-vqa
    """

    uri = store.normalize(uri)
    summary = store.put_artifact(src, uri, replace)
    typer.echo(f"{src}/ -> {uri} ({summary['files']} files, {_size(summary['bytes'])})")


@store_app.command("verify")
def store_verify(
    uri: Annotated[str, typer.Argument(help="A committed artifact.")],
    show_paths: Annotated[bool, typer.Option(help="Name a damaged file (file names may carry patient data).")] = False,
):
    """Check every file of a committed artifact against the sha256 in its MANIFEST.json; exit 1 if damaged.

    Example: medrl store verify s3://medrl/medrl/20261121-120000-ab12/data
    """

    uri = store.normalize(uri)
    try:
        summary = store.verify(uri)
    except store.IntegrityError as err:
        typer.echo(f"DAMAGED: {err}", err=True)
        if show_paths and err.file:
            typer.echo(f"damaged file: {err.file}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {summary['files']} files, {_size(summary['bytes'])} match {uri}/MANIFEST.json")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
