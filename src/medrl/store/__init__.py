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
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from medrl.errors import MedrlError

log = logging.getLogger("medrl.store")

MANIFEST = "MANIFEST.json"
COMMITTED = "COMMITTED"


class StoreError(MedrlError, RuntimeError):
    """A store operation failed; the message names the URI and what to do."""


class NotCommittedError(StoreError):
    pass


class OutputError(StoreError):
    """An output path holds something medrl did not write; it is left as it is."""


class IntegrityError(StoreError):
    """A file does not match the manifest. `file` holds its relative path, kept out of the message."""

    def __init__(self, message: str, file: str | None = None):
        super().__init__(message)
        self.file = file


def sha256_file(path: Path) -> str:
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # readinto a reused buffer: disk speed


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


def marker_text(manifest_data: bytes, version: str = "") -> str:
    """The COMMITTED marker: the manifest's sha256 and, for a version kept beside an older one in an object store
    (`.v-<id>/`), the prefix holding that version's files and manifest. Writing it switches readers at once."""
    digest = hashlib.sha256(manifest_data).hexdigest()
    return f"{digest} {version}\n" if version else digest + "\n"


def parse_marker(text: str) -> tuple[str, str]:
    """(manifest sha256, version prefix) of a COMMITTED marker; the prefix is '' for files at the root."""
    digest, _, version = text.strip().partition(" ")
    return digest, version.strip()


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


def is_artifact(path: Path) -> bool:
    """A folder medrl committed: it holds MANIFEST.json and a COMMITTED marker (damaged or not)."""
    return (path / COMMITTED).is_file() and (path / MANIFEST).is_file()


def check_output(final: Path) -> None:
    """Refuse an output path that holds something medrl did not write: a file, a link, or a folder with content
    that is not a committed medrl artifact. A missing or empty folder, or an artifact to replace, passes."""
    final = Path(final)
    fix = "give a new or empty folder, or move what is there away first"
    if final.is_symlink():
        raise OutputError(f"{final} is a link; medrl never replaces what it did not write: {fix}")
    if final.exists() and not final.is_dir():
        raise OutputError(f"{final} is a file; medrl writes a folder there and never replaces a file: {fix}")
    if final.is_dir() and not is_artifact(final) and any(final.iterdir()):
        raise OutputError(
            f"{final} is not empty and not a medrl artifact (no {COMMITTED} marker); medrl never deletes or "
            f"moves what it did not write: {fix}"
        )


def outermost(folders: Iterable[str]) -> list[str]:
    """The folders not inside another of them, shallowest first.

    >>> outermost(["a/b", "a", "c/d", ""])
    ['a', 'c/d']
    """
    found = sorted({f for f in folders if f}, key=lambda rel: (rel.count("/"), rel))
    return [rel for rel in found if not any(rel.startswith(outer + "/") for outer in found)]


def nested_artifacts(root: Path) -> list[str]:
    """Relative paths of the committed artifacts inside the folder `root` (not `root` itself), outermost only."""
    return outermost(p.parent.relative_to(root).as_posix() for p in Path(root).rglob(COMMITTED) if p.parent != root)


def nested_refusal(uri: str, nested: list[str]) -> OutputError:
    more = f" and {len(nested) - 1} more" if len(nested) > 1 else ""
    return OutputError(
        f"{uri} holds another committed artifact, {join(uri, nested[0])}{more}; replacing {uri} would delete it. "
        "Move or delete the inner artifact first, or give a new URI"
    )


def place_dir(staging: Path, final: Path, scratch: bool = False) -> None:
    """Move a finished staging directory to `final`: a new or empty folder, or a committed artifact it replaces.
    Anything else at `final` is refused (OutputError) and left untouched, unless `scratch` says `final` lies in
    medrl's own work folder (a torn checkpoint of an earlier attempt): then it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if scratch and final.is_dir() and not final.is_symlink() and not is_artifact(final):
        shutil.rmtree(final)
    check_output(final)
    if is_artifact(final):
        nested = [] if scratch else nested_artifacts(final)  # scratch: medrl's own work folder, nothing of a user's
        if nested:
            raise nested_refusal(str(final), nested)
        trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
        return
    try:
        os.replace(staging, final)  # onto a missing or empty folder; fails if something appeared there since
    except OSError as err:
        raise OutputError(
            f"{final}: something was written there meanwhile ({err.strerror}); it is left as it is"
        ) from None


class FileBackend:
    """Local directories. Commit = write into a hidden staging folder, then rename into place."""

    def path(self, uri: str) -> Path:
        return Path(urlparse(uri).path if uri.startswith("file://") else uri)

    @contextlib.contextmanager
    def commit_dir(self, uri: str) -> Iterator[Path]:
        final = self.path(uri)
        check_output(final)  # before the work, so a refused output costs nothing
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            data = manifest_bytes(build_manifest(staging))
            (staging / MANIFEST).write_bytes(data)
            (staging / COMMITTED).write_text(marker_text(data))
            place_dir(staging, final)
            record_verified(final)  # every file was just hashed for the manifest
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def commit_from(self, local: Path, uri: str) -> None:
        with self.commit_dir(uri) as staging:
            shutil.copytree(local, staging, dirs_exist_ok=True)

    def is_committed(self, uri: str) -> bool:
        return (self.path(uri) / COMMITTED).is_file()

    def _committed_root(self, uri: str) -> Path:
        if not self.path(uri).exists():
            raise NotCommittedError(
                f"{uri} does not exist: check the path, or write it first (medrl prep writes a dataset, medrl train "
                "a model)."
            )
        if not self.is_committed(uri):
            raise NotCommittedError(
                f"{uri} is not a committed artifact (no {COMMITTED} marker): the stage that writes it did not "
                "finish. Re-run that stage."
            )
        return self.path(uri)

    def open_dir(self, uri: str, verify: bool = False) -> Path:
        root = self._committed_root(uri)
        # Every open checks the files: against the record of their last check when nothing changed since (cheap),
        # by hashing otherwise; `verify` hashes them all whatever the record says.
        verify_dir(root, uri, cache=not verify)
        return root

    def manifest(self, uri: str) -> dict:
        try:
            return json.loads((self._committed_root(uri) / MANIFEST).read_bytes())
        except FileNotFoundError:
            raise IntegrityError(f"{uri}: {MANIFEST} is missing; the artifact is damaged") from None
        except ValueError:
            raise IntegrityError(f"{uri}: {MANIFEST} is not JSON; the artifact is damaged") from None

    def member(self, uri: str, rel: str) -> bytes | None:
        meta = self.manifest(uri)["files"].get(rel)
        if meta is None:
            return None
        data = (self.path(uri) / rel).read_bytes() if (self.path(uri) / rel).is_file() else b""
        return checked_member(uri, rel, data, meta)

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        yield  # local files: nothing to retry

    def verify(self, uri: str) -> dict:
        self.open_dir(uri, verify=True)
        files = self.manifest(uri)["files"]
        return {"files": len(files), "bytes": sum(f["size"] for f in files.values())}

    def download(self, uri: str, dest: Path, scratch: bool = False) -> Path:
        if not scratch:
            check_output(dest)
        root = self.open_dir(uri, verify=True)
        staging = dest.parent / f".staging-{dest.name}-{uuid.uuid4().hex[:8]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(root, staging)
            place_dir(staging, dest, scratch)
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

    def nested(self, uri: str) -> list[str]:
        return nested_artifacts(self.path(uri)) if self.path(uri).is_dir() else []

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


def checked_member(uri: str, rel: str, data: bytes, meta: dict) -> bytes:
    """`data`, the file `rel` of the artifact `uri` as read, if it matches its manifest entry `meta`."""
    if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise IntegrityError(
            f"{uri}: a file does not match its sha256 in {MANIFEST}; the artifact is damaged. Re-run the stage that "
            f"wrote it (`medrl store verify {uri} --show-paths` names the file)",
            file=rel,
        )
    return data


def _stamp(path: Path) -> list[int]:
    """What changes when a file's bytes do: size, mtime and ctime (which no tool can set back), inode."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _record_path(root: Path) -> Path:
    return cache_root() / "verified" / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32] + ".json")


def record_verified(root: Path, digest: str | None = None) -> None:
    """Remember that every file of `root` matched its manifest as it is now, so that `verify_dir(cache=True)` does
    not hash it again while no file changes. Best effort: a cache that cannot be written only costs a re-hash."""
    root = Path(root)
    with contextlib.suppress(OSError, ValueError):
        digest = digest or (root / COMMITTED).read_text().strip()
        files = json.loads((root / MANIFEST).read_bytes())["files"]
        record = {"marker": digest, "files": {rel: _stamp(root / rel) for rel in files}}
        path = _record_path(root)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".record-")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)


def _recorded(root: Path, digest: str) -> dict:
    with contextlib.suppress(OSError, ValueError, KeyError):
        record = json.loads(_record_path(root).read_text())
        if record["marker"] == digest:
            return record["files"]
    return {}


def verify_dir(root: Path, uri: str, cache: bool = False) -> None:
    """Check every file against MANIFEST.json and the manifest against COMMITTED. Files are hashed in parallel
    (hashing releases the GIL); with `cache`, a file whose size, mtime, ctime and inode are those recorded when it
    last matched is not hashed again; without `cache`, a file the manifest does not list fails the check too."""
    try:
        data = (root / MANIFEST).read_bytes()
        marker = (root / COMMITTED).read_text()
    except FileNotFoundError:
        raise IntegrityError(f"{uri}: {MANIFEST} or {COMMITTED} is missing; the artifact is damaged") from None
    digest = hashlib.sha256(data).hexdigest()
    if marker.strip() != digest:
        raise IntegrityError(f"{uri}: {MANIFEST} does not match its {COMMITTED} marker; the artifact is damaged")
    try:
        files = sorted(json.loads(data)["files"].items())
    except (ValueError, KeyError, AttributeError):
        raise IntegrityError(f"{uri}: {MANIFEST} is malformed; the artifact is damaged") from None
    known = _recorded(root, digest) if cache else {}

    def ok(rel: str, meta: dict) -> bool:
        path = root / rel
        if not path.is_file() or path.stat().st_size != meta["size"]:
            return False
        if known.get(rel) == _stamp(path):
            return True
        return sha256_file(path) == meta["sha256"]

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="medrl-hash") as pool:
        results = list(pool.map(lambda item: ok(*item), files))
    for i, ((rel, _), good) in enumerate(zip(files, results, strict=True)):
        if not good:
            raise damaged(uri, rel, i, len(files))
    if not cache:
        listed = {rel for rel, _ in files}
        extra = [rel for rel in unlisted(root) if rel not in listed]
        if extra:
            raise extra_files(uri, extra)
    if cache:
        record_verified(root, digest)


def unlisted(root: Path) -> list[str]:
    """Relative paths of the files under `root` a manifest would list (commit markers and the files of nested
    committed artifacts left out, those being checked on their own)."""
    inner = nested_artifacts(root)
    return [rel for rel, _ in local_files(root) if not any(rel.startswith(n + "/") for n in inner)]


def extra_files(uri: str, extra: list[str]) -> IntegrityError:
    return IntegrityError(
        f"{uri}: {len(extra)} file(s) not in its {MANIFEST} were added after it was committed; the artifact is "
        f"damaged. Remove them or re-run the stage that wrote it (`medrl store verify {uri} --show-paths` names one)",
        file=extra[0],
    )


def verified(ref: str | Path) -> Path:
    """The local folder of an input artifact (a model, a dataset, a checkpoint), checked against its MANIFEST
    before use: a store URI (downloaded to the cache), or a local folder. A folder without MANIFEST.json is not
    a medrl artifact (a hub snapshot, a download) and is returned as it is, as is a hub id; a MANIFEST without
    its COMMITTED marker is refused. The check is remembered per file (size, mtime, ctime): a re-run of an
    unchanged 5 GB model does not hash it again."""
    text = str(ref)
    if "://" in text:
        uri = normalize(check_uri(text))
        root = open_dir(uri)
        verify_dir(root, uri, cache=True)
        return root
    path = Path(text).expanduser()
    if not (path / MANIFEST).is_file():
        return path
    if not (path / COMMITTED).is_file():
        raise NotCommittedError(
            f"{path} has a {MANIFEST} but no {COMMITTED} marker: the stage that wrote it did not finish. Re-run it."
        )
    verify_dir(path, str(path), cache=True)
    return path


def newest_verified(candidates: Iterable[str | Path]) -> Path | None:
    """The first of `candidates` (checkpoints, newest first) that passes `verified`, or None. Each one that fails
    is named in a warning and skipped: resuming from an older checkpoint loses steps, from a damaged one the run."""
    for ref in candidates:
        try:
            return verified(ref)
        except (IntegrityError, NotCommittedError) as err:
            log.warning("checkpoint %s is damaged, skipping it for an older one: %s", Path(str(ref)).name, err)
    return None


_BACKENDS: dict[object, object] = {}
SCHEMES = "file:///path or s3://bucket/prefix (or a plain path)"


def check_uri(uri: str) -> str:
    """Refuse a store URI no backend serves, before anything runs (a config validator calls this); returns it.

    >>> check_uri("s3://medrl/runs")
    's3://medrl/runs'
    """
    if not uri or not uri.strip():
        raise StoreError(f"store URI is empty; give {SCHEMES}")
    if "://" not in uri:
        return uri
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return uri
    if scheme != "s3":
        raise StoreError(f"store URI {uri!r}: scheme '{scheme}' is not supported; use {SCHEMES}")
    bucket = urlparse(uri).netloc
    if not bucket:
        raise StoreError(f"store URI {uri!r}: no bucket; S3 URIs look like s3://bucket/prefix. Use {SCHEMES}")
    from minio.helpers import check_bucket_name

    try:
        check_bucket_name(bucket, strict=True)
    except ValueError as err:
        raise StoreError(
            f"store URI {uri!r}: {err}; S3 bucket names are 3-63 lowercase letters, digits, '-' and '.'. Use {SCHEMES}"
        ) from None
    return uri


def backend(uri: str):
    scheme = urlparse(uri).scheme or "file"
    if scheme == "file":
        return _BACKENDS.setdefault("file", FileBackend())
    if scheme == "s3":
        from medrl.store.s3 import S3Backend, S3Settings  # lazy: minio, needed for s3:// only

        # One client per endpoint and credentials: tests and tools may switch them within a process.
        settings = S3Settings.from_env()
        if settings not in _BACKENDS:
            _BACKENDS[settings] = S3Backend(settings)
        return _BACKENDS[settings]
    raise StoreError(f"store URI {uri!r}: scheme '{scheme}' is not supported; use {SCHEMES}")


def operation(uri: str):
    """Context manager: the store calls made inside share one retry budget (MEDRL_STORE_RETRY_SECONDS), so a
    command made of many calls fails once, within the budget, when the store is down."""
    return backend(uri).operation()


def commit_dir(uri: str):
    """Context manager: yields a local staging directory; on clean exit it is committed at `uri`."""
    return backend(uri).commit_dir(uri)


def commit_from(local: Path, uri: str) -> None:
    """Commit the existing local directory `local` at `uri` (it is read, not moved)."""
    backend(uri).commit_from(Path(local), uri)


def open_dir(uri: str, verify: bool = False) -> Path:
    """A local directory holding the committed artifact at `uri` (downloaded and verified for S3)."""
    return backend(uri).open_dir(uri, verify=verify)


def download(uri: str, dest: Path, scratch: bool = False) -> Path:
    """Copy the committed artifact at `uri` into the local directory `dest` (verified, placed atomically). `dest`
    must be new, empty or an artifact; `scratch=True` (medrl's own work folder) lets it replace anything."""
    return backend(uri).download(uri, Path(dest), scratch=scratch)


def manifest(uri: str) -> dict:
    """The MANIFEST.json of a committed artifact."""
    return backend(uri).manifest(uri)


def member(uri: str, rel: str) -> bytes | None:
    """One file of the committed artifact at `uri` (checked against its manifest), without fetching the others;
    None when the manifest does not list `rel`."""
    return backend(uri).member(uri, rel)


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
    with be.operation():
        entries = be.entries(uri)
        if not entries and not be.exists(uri):
            # A typo must not read as an empty folder.
            raise StoreError(f"{uri} does not exist: check the URI (bucket and path)")
        for name, is_dir in entries:
            entry: dict = {"name": name, "kind": "folder" if is_dir else "object"}
            if is_dir and be.is_committed(join(uri, name)):
                try:
                    files = be.manifest(join(uri, name))["files"]
                    entry.update(kind="committed", files=len(files), bytes=sum(f["size"] for f in files.values()))
                except (IntegrityError, KeyError, TypeError, AttributeError) as err:
                    # One damaged artifact must not hide the others: it is listed as such.
                    why = str(err) if isinstance(err, IntegrityError) else f"{MANIFEST} is malformed; it is damaged"
                    entry.update(kind="damaged", error=why)
            out.append(entry)
    return out


def delete(uri: str) -> None:
    """Remove an object or a directory; a committed directory loses its COMMITTED marker first."""
    backend(uri).delete(uri)


def check_replace(uri: str, replace: bool, what: str) -> None:
    """Refuse to write over the committed artifact at `uri` unless `replace`: a trained model or a prepared dataset
    is hours of work, never replaced unasked. `what` names the input and the artifact, e.g. `--out ./m: a model`.
    With `replace` the old one stays readable until the new one is committed (commit_dir)."""
    if not replace and is_committed(uri):
        raise OutputError(
            f"{what} is already committed there; medrl replaces it only when asked: pass --replace (the old one "
            "stays until the new one is committed), or give another --out"
        )


def put_artifact(src: Path, uri: str, replace: bool = False) -> dict:
    """`medrl store put`: commit the local folder `src` at `uri` as one artifact; returns {'files', 'bytes'}.

    A missing bucket is created. Over a committed artifact only with `replace`, and atomically: the previous
    version stays readable until the new one is committed (see S3Backend.commit_from; locally, place_dir)."""
    src = Path(src)
    if not src.is_dir():
        raise StoreError(f"medrl store put {src}: not a folder; give the folder to upload")
    leaving = links_leaving(src)
    if leaving:
        raise StoreError(
            f"medrl store put {src}: {leaving} symbolic link(s) in it lead out of the folder; medrl uploads only what "
            f"lies inside it (links within it are followed). Copy the folder with the links resolved (cp -rL {src} "
            f"COPY, e.g. for a Hugging Face cache snapshot) and put the copy; `find {src} -type l` lists the links"
        )
    uri = normalize(uri)
    be = backend(uri)
    with be.operation():
        if be.is_committed(uri) and not replace:
            raise StoreError(f"medrl store put: {uri} is already committed; pass --replace to replace it")
        inner = be.nested(uri)
        if inner:  # before the upload, so a refusal costs nothing
            raise nested_refusal(uri, inner)
        be.commit_from(src, uri)
        files = be.manifest(uri)["files"]
    return {"files": len(files), "bytes": sum(f["size"] for f in files.values())}


def links_leaving(root: Path) -> int:
    """How many symbolic links under `root` point outside it (or nowhere)."""
    real = os.path.realpath(root)
    n = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                n += not (target.startswith(real.rstrip("/") + "/") and os.path.exists(target))
    return n


class LeaseError(StoreError):
    """Another live run holds the lease."""


LEASE = ".lease"
LEASE_SECONDS = 60.0  # a crashed run blocks its id this long at most; a live one renews every third of it
LEASE_SETTLE = 0.3  # between writing a lease and reading it back: of two runs racing for it, the last write wins


def pid_namespace() -> str:
    """This process's PID namespace (Linux), so that a PID is compared only within the one it belongs to: pods
    sharing a node's host name (hostNetwork) have PID namespaces of their own."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def holder_dead(held: dict) -> bool:
    """Whether the lease `held` belongs to a process of this host and PID namespace that no longer exists (killed,
    crashed): then it need not lapse before a re-run takes it. A holder elsewhere is never judged dead."""
    pid = held.get("pid")
    if held.get("host") != socket.gethostname() or held.get("pid_ns", "") != pid_namespace() or not pid_namespace():
        return False
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


class Lease:
    """A run's hold on `<uri>/.lease` (a hidden object listings skip): who holds it and until when, renewed by
    a thread while held. Stores without conditional writes cannot make taking it atomic: a lease is written,
    read back after LEASE_SETTLE, and kept only if it is still ours; two runs starting within that moment are
    the case this does not cover."""

    def __init__(self, uri: str, ttl: float):
        self.uri, self.ttl = normalize(uri), ttl
        self.object = join(self.uri, LEASE)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict | None:
        if not exists(self.object):
            return None
        try:
            return json.loads(read_bytes(self.object))
        except (StoreError, ValueError):
            return None  # a torn or foreign lease object holds nothing

    def _write(self) -> None:
        doc = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + self.ttl}
        doc["pid_ns"] = pid_namespace()
        write_bytes(self.object, json.dumps(doc).encode())

    def _refuse(self, held: dict) -> LeaseError:
        left = max(held.get("expires", 0) - time.time(), 0)
        return LeaseError(
            f"{self.uri} is in use by another run (host {held.get('host')}, pid {held.get('pid')}); its lease "
            f"lapses {left:.0f} s after that run stops renewing it. Wait for that run to end, or give this one "
            "another id (--run-id)"
        )

    def acquire(self) -> Lease:
        held = self._read()
        if held and held.get("token") != self.token and held.get("expires", 0) > time.time():
            if not holder_dead(held):
                raise self._refuse(held)
            log.warning("lease of %s: its holder (pid %s on this host) is gone; taking it over", self.uri, held["pid"])
        self._write()
        time.sleep(LEASE_SETTLE)
        held = self._read()
        if not held or held.get("token") != self.token:
            raise self._refuse(held or {})
        self._thread = threading.Thread(target=self._renew, name="medrl-lease", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                held = self._read()
                if held and held.get("token") != self.token:
                    log.error(
                        "lease of %s was taken by another run (host %s); stop one of them", self.uri, held.get("host")
                    )
                    return
                self._write()
            except StoreError as err:  # the store is down: the lease may lapse; the run goes on
                log.warning("lease of %s not renewed: %s", self.uri, err)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(StoreError):
            held = self._read()
            if held and held.get("token") == self.token:
                delete(self.object)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lease(uri: str, ttl: float | None = None) -> Lease:
    """Take the lease of the run folder `uri` or raise LeaseError naming the holder; release it with
    `.release()` or use it as a context manager. `ttl`: MEDRL_LEASE_SECONDS, else LEASE_SECONDS."""
    if ttl is None:
        ttl = float(os.environ.get("MEDRL_LEASE_SECONDS") or LEASE_SECONDS)
    return Lease(uri, ttl).acquire()


def put_file(uri: str, path: Path) -> None:
    write_bytes(uri, Path(path).read_bytes())
