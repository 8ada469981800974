"""The artifact store: committed directories and single objects under `file://` or `s3://` URIs.

A directory is committed as a whole: its files, then MANIFEST.json (path, size, sha256 of each), then a
COMMITTED marker holding the manifest's sha256. Readers take only committed directories, so a stage that
died half-way is never mistaken for a finished one. Single objects are written atomically.

Errors name the artifact's URI, never a file inside it: file names of datasets can carry patient data.
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

from medrl.errors import MedrlError

MANIFEST = "MANIFEST.json"
COMMITTED = "COMMITTED"


class StoreError(MedrlError, RuntimeError):
    """A store operation failed; the message names the URI and what to do."""


class NotCommittedError(StoreError):
    pass


class IntegrityError(StoreError):
    """A file does not match the manifest. `file` holds its relative path, kept out of the message."""

    def __init__(self, message: str, file: str | None = None):
        super().__init__(message)
        self.file = file


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def local_files(root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every file under `root` but the commit markers, sorted."""
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in (MANIFEST, COMMITTED):
            files.append((rel, path))
    return files


def build_manifest(root: Path) -> dict:
    files = {rel: {"size": path.stat().st_size, "sha256": sha256_file(path)} for rel, path in local_files(root)}
    return {"version": 1, "files": files}


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def marker_text(manifest_data: bytes) -> str:
    return hashlib.sha256(manifest_data).hexdigest() + "\n"


def damaged(uri: str, rel: str, index: int, total: int, what: str = "does not match its sha256") -> IntegrityError:
    return IntegrityError(
        f"{uri}: file {index + 1} of {total} {what} in {MANIFEST}; the artifact is damaged. Re-run the stage "
        f"that wrote it (`medrl store verify {uri} --show-paths` names the file)",
        file=rel,
    )


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


def cache_root() -> Path:
    """Where downloaded artifacts are kept: MEDRL_CACHE_DIR, else ~/.cache/medrl."""
    root = os.environ.get("MEDRL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "medrl"
    )
    return Path(root)


def place_dir(staging: Path, final: Path) -> None:
    """Move a finished staging directory to `final`, replacing what was there."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)


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
            data = manifest_bytes(build_manifest(staging))
            (staging / MANIFEST).write_bytes(data)
            (staging / COMMITTED).write_text(marker_text(data))
            place_dir(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def commit_from(self, local: Path, uri: str) -> None:
        with self.commit_dir(uri) as staging:
            shutil.copytree(local, staging, dirs_exist_ok=True)

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

    def manifest(self, uri: str) -> dict:
        return json.loads((self.open_dir(uri) / MANIFEST).read_bytes())

    def verify(self, uri: str) -> dict:
        root = self.open_dir(uri, verify=True)
        files = json.loads((root / MANIFEST).read_bytes())["files"]
        return {"files": len(files), "bytes": sum(f["size"] for f in files.values())}

    def download(self, uri: str, dest: Path) -> Path:
        root = self.open_dir(uri, verify=True)
        staging = dest.parent / f".staging-{dest.name}-{uuid.uuid4().hex[:8]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(root, staging)
            place_dir(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

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
        except (FileNotFoundError, IsADirectoryError):
            raise StoreError(f"{uri} does not exist") from None

    def exists(self, uri: str) -> bool:
        return self.path(uri).exists()

    def entries(self, uri: str) -> list[tuple[str, bool]]:
        root = self.path(uri)
        if not root.is_dir():
            return []
        return sorted((p.name, p.is_dir()) for p in root.iterdir() if not p.name.startswith("."))

    def list(self, uri: str) -> list[str]:
        return [name for name, _ in self.entries(uri)]

    def delete(self, uri: str) -> None:
        path = self.path(uri)
        if path.is_dir():
            (path / COMMITTED).unlink(missing_ok=True)  # uncommitted first: never a half-deleted artifact
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def verify_dir(root: Path, uri: str) -> None:
    """Check every file against MANIFEST.json and the manifest against COMMITTED."""
    data = (root / MANIFEST).read_bytes()
    if (root / COMMITTED).read_text().strip() != hashlib.sha256(data).hexdigest():
        raise IntegrityError(f"{uri}: {MANIFEST} does not match its {COMMITTED} marker; the artifact is damaged")
    files = json.loads(data)["files"]
    for i, (rel, meta) in enumerate(sorted(files.items())):
        path = root / rel
        if not path.is_file() or path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            raise damaged(uri, rel, i, len(files))


_BACKENDS: dict[object, object] = {}


def backend(uri: str):
    scheme = urlparse(uri).scheme or "file"
    if scheme == "file":
        return _BACKENDS.setdefault("file", FileBackend())
    if scheme == "s3":
        from medrl.infra.s3 import S3Backend, S3Settings

        # One client per endpoint and credentials: tests and tools may switch them within a process.
        settings = S3Settings.from_env()
        if settings not in _BACKENDS:
            _BACKENDS[settings] = S3Backend(settings)
        return _BACKENDS[settings]
    raise StoreError(f"store URI {uri!r}: scheme '{scheme}' is not supported; use file:///path or s3://bucket/prefix")


def commit_dir(uri: str):
    """Context manager: yields a local staging directory; on clean exit it is committed at `uri`."""
    return backend(uri).commit_dir(uri)


def commit_from(local: Path, uri: str) -> None:
    """Commit the existing local directory `local` at `uri` (it is read, not moved)."""
    backend(uri).commit_from(Path(local), uri)


def open_dir(uri: str, verify: bool = False) -> Path:
    """A local directory holding the committed artifact at `uri` (downloaded and verified for S3)."""
    return backend(uri).open_dir(uri, verify=verify)


def download(uri: str, dest: Path) -> Path:
    """Copy the committed artifact at `uri` into the local directory `dest` (verified, placed atomically)."""
    return backend(uri).download(uri, Path(dest))


def manifest(uri: str) -> dict:
    """The MANIFEST.json of a committed artifact."""
    return backend(uri).manifest(uri)


def verify(uri: str) -> dict:
    """Hash every file of a committed artifact against its manifest; returns {'files': n, 'bytes': b}."""
    return backend(uri).verify(uri)


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


def ls(uri: str) -> list[dict]:
    """What lies under `uri`: name, kind and, for committed artifacts, files and bytes. Kinds: `committed` (an
    artifact readers take), `folder` (no COMMITTED marker: a folder of artifacts, or one that did not finish)
    and `object` (a single file such as config.yaml)."""
    be = backend(uri)
    out = []
    for name, is_dir in be.entries(uri):
        entry: dict = {"name": name, "kind": "folder" if is_dir else "object"}
        if is_dir and be.is_committed(join(uri, name)):
            files = be.manifest(join(uri, name))["files"]
            entry.update(kind="committed", files=len(files), bytes=sum(f["size"] for f in files.values()))
        out.append(entry)
    return out


def delete(uri: str) -> None:
    """Remove an object or a directory; a committed directory loses its COMMITTED marker first."""
    backend(uri).delete(uri)


def put_file(uri: str, path: Path) -> None:
    write_bytes(uri, Path(path).read_bytes())
