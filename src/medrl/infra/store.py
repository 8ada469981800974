"""The artifact store: committed directories and single objects under `file://` or `s3://` URIs.

A directory is committed as a whole: its files, then MANIFEST.json (path, size, sha256 of each), then a
COMMITTED marker holding the manifest's sha256. Readers take only committed directories, so a stage that
died half-way is never mistaken for a finished one. Single objects are written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

MANIFEST = "MANIFEST.json"
COMMITTED = "COMMITTED"


class StoreError(RuntimeError):
    """A store operation failed; the message names the URI and what to do."""


class NotCommittedError(StoreError):
    pass


class IntegrityError(StoreError):
    pass


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_manifest(root: Path) -> dict:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in (MANIFEST, COMMITTED):
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return {"version": 1, "files": files}


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])


def normalize(uri: str) -> str:
    """Plain paths become absolute file:// URIs, so subprocesses and pods agree on them."""
    if "://" not in uri:
        return "file://" + str(Path(uri).expanduser().resolve())
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        return "file://" + str(Path(path).expanduser().resolve())
    return uri.rstrip("/")


class FileBackend:
    """Local directories. Commit = write into a hidden staging folder, then rename into place."""

    def path(self, uri: str) -> Path:
        return Path(urlparse(uri).path if uri.startswith("file://") else uri)

    @contextlib.contextmanager
    def commit_dir(self, uri: str) -> Iterator[Path]:
        final = self.path(uri)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            manifest = build_manifest(staging)
            data = manifest_bytes(manifest)
            (staging / MANIFEST).write_bytes(data)
            (staging / COMMITTED).write_text(hashlib.sha256(data).hexdigest() + "\n")
            if final.exists():
                trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
                os.replace(final, trash)
                os.replace(staging, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def is_committed(self, uri: str) -> bool:
        return (self.path(uri) / COMMITTED).is_file()

    def open_dir(self, uri: str, verify: bool = False) -> Path:
        root = self.path(uri)
        if not self.is_committed(uri):
            raise NotCommittedError(
                f"{uri} is not a committed artifact (no {COMMITTED} marker): the stage that writes it did not "
                "finish. Re-run that stage."
            )
        if verify:
            verify_dir(root, uri)
        return root

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = self.path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def read_bytes(self, uri: str) -> bytes:
        try:
            return self.path(uri).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{uri} does not exist") from None

    def exists(self, uri: str) -> bool:
        return self.path(uri).exists()

    def list(self, uri: str) -> list[str]:
        root = self.path(uri)
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))

    def delete(self, uri: str) -> None:
        path = self.path(uri)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def verify_dir(root: Path, uri: str) -> None:
    """Check every file against MANIFEST.json and the manifest against COMMITTED."""
    data = (root / MANIFEST).read_bytes()
    if (root / COMMITTED).read_text().strip() != hashlib.sha256(data).hexdigest():
        raise IntegrityError(f"{uri}: {MANIFEST} does not match its {COMMITTED} marker; the artifact is damaged")
    for rel, meta in json.loads(data)["files"].items():
        path = root / rel
        if not path.is_file() or path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            raise IntegrityError(f"{uri}: file {rel} does not match its sha256 in {MANIFEST}; the artifact is damaged")


_BACKENDS: dict[str, object] = {}


def backend(uri: str):
    scheme = urlparse(uri).scheme or "file"
    if scheme == "file":
        return _BACKENDS.setdefault("file", FileBackend())
    if scheme == "s3":
        from medrl.infra.s3 import S3Backend

        return _BACKENDS.setdefault("s3", S3Backend.from_env())
    raise StoreError(f"store URI {uri!r}: scheme '{scheme}' is not supported; use file:///path or s3://bucket/prefix")


def commit_dir(uri: str):
    """Context manager: yields a local staging directory; on clean exit it is committed at `uri`."""
    return backend(uri).commit_dir(uri)


def open_dir(uri: str, verify: bool = False) -> Path:
    """A local directory holding the committed artifact at `uri` (downloaded and verified for S3)."""
    return backend(uri).open_dir(uri, verify=verify)


def is_committed(uri: str) -> bool:
    return backend(uri).is_committed(uri)


def write_bytes(uri: str, data: bytes) -> None:
    backend(uri).write_bytes(uri, data)


def read_bytes(uri: str) -> bytes:
    return backend(uri).read_bytes(uri)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def exists(uri: str) -> bool:
    return backend(uri).exists(uri)


def list_dir(uri: str) -> list[str]:
    return backend(uri).list(uri)


def put_file(uri: str, path: Path) -> None:
    write_bytes(uri, Path(path).read_bytes())
