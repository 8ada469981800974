"""The store's S3 backend (MinIO, SeaweedFS, AWS S3) through the `minio` client, configured by AWS_* variables.

Same protocol as the file backend: files, then MANIFEST.json, then COMMITTED. A replacement is uploaded beside
the committed version (under `.v-<id>/`) and the COMMITTED marker, one object written atomically, switches to
it; the old version is removed after. Requests are retried on connection errors and 5xx, but one store
operation (an upload, a download, a listing) has one retry budget, MEDRL_STORE_RETRY_SECONDS, however many files
it moves: once the store has failed for that long the whole operation fails, once. Downloads land in a local
cache and are checked against the manifest.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import http.client
import io
import json
import logging
import os
import random
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError

from medrl.store import (
    COMMITTED,
    MANIFEST,
    IntegrityError,
    NotCommittedError,
    StoreError,
    cache_root,
    check_output,
    checked_member,
    damaged,
    extra_files,
    local_files,
    manifest_bytes,
    marker_text,
    nested_refusal,
    outermost,
    parse_marker,
    place_dir,
    record_verified,
    verify_dir,
)

log = logging.getLogger("medrl.store")
# urllib3 logs each request's path at DEBUG, and object keys carry file names of the data (patients' images):
# keep its connection pool at INFO even when a user turns on DEBUG.
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

T = TypeVar("T")
NOT_FOUND = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "XMinioServerNotInitialized"}
CREDENTIAL_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
CHUNK = 1 << 20
DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
DEFAULT_RETRY_SECONDS = 120.0


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 API is and how to talk to it; read from the environment (the AWS CLI's variables)."""

    endpoint: str  # host[:port]
    secure: bool  # TLS: from the endpoint's scheme
    access_key: str
    secret_key: str
    session_token: str | None = None
    region: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    workers: int = 4
    part_size: int = 0  # 0: the client's choice (5 MiB parts for files under 50 GiB)
    endpoint_given: bool = True  # False: no AWS_ENDPOINT_URL[_S3], so AWS S3 by default

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> S3Settings:
        env = dict(os.environ if env is None else env)
        given = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        url = given or DEFAULT_ENDPOINT
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path not in ("", "/"):
            raise StoreError(
                f"AWS_ENDPOINT_URL_S3={url!r}: give the S3 endpoint as http://host:port (no TLS) or https://host"
            )
        access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise StoreError(
                "s3:// store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (in the cluster, from the store's "
                "Secret) and AWS_ENDPOINT_URL_S3 for MinIO or SeaweedFS"
            )
        try:
            retry_seconds = float(env.get("MEDRL_STORE_RETRY_SECONDS") or DEFAULT_RETRY_SECONDS)
            workers = int(env.get("MEDRL_STORE_WORKERS") or 4)
            part_size = int(env.get("MEDRL_S3_PART_SIZE") or 0)
        except ValueError as err:
            raise StoreError(f"MEDRL_STORE_RETRY_SECONDS / MEDRL_STORE_WORKERS / MEDRL_S3_PART_SIZE: {err}") from None
        if part_size and part_size < 5 * 1024 * 1024:
            raise StoreError(f"MEDRL_S3_PART_SIZE={part_size}: S3 parts are at least 5 MiB (5242880 bytes)")
        return cls(
            endpoint=parsed.netloc,
            secure=parsed.scheme == "https",
            access_key=access,
            secret_key=secret,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            verify_tls=_flag(env.get("MEDRL_S3_TLS_VERIFY"), True),
            ca_bundle=env.get("AWS_CA_BUNDLE") or None,
            retry_seconds=max(retry_seconds, 0.0),
            workers=max(workers, 1),
            part_size=part_size,
            endpoint_given=bool(given),
        )

    @property
    def url(self) -> str:
        return ("https://" if self.secure else "http://") + self.endpoint


def split(uri: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ('bucket', 'a/b')."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"store URI {uri!r}: S3 URIs look like s3://bucket/prefix")
    return parsed.netloc, parsed.path.strip("/")


def describe(exc: BaseException) -> str:
    """A short account of a failure that names no object (keys can carry file names of patients' data)."""
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", None)
        return f"S3 error {exc.code}" + (f" (HTTP {status})" if status else "")
    if isinstance(exc, ServerError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, InvalidResponseError):
        return f"HTTP {exc._code} with a non-S3 reply"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return type(exc.reason).__name__
    if isinstance(exc, OSError) and exc.strerror:  # 'No space left on device', without the file's name
        return f"{type(exc).__name__} ({exc.strerror})"
    return type(exc).__name__


def transient(exc: BaseException) -> bool:
    """Worth retrying: the connection failed or the server answered 5xx (or asked to slow down)."""
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return status >= 500 or exc.code in TRANSIENT_CODES
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return (exc._code or 0) >= 500
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError | http.client.HTTPException)


def unresolvable(exc: BaseException) -> bool:
    """The endpoint's host name did not resolve (DNS)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        exc = exc.reason or exc
    return isinstance(exc, urllib3.exceptions.NameResolutionError)


# getaddrinfo's answers that the name does not exist, as opposed to EAI_AGAIN (the resolver is down for now).
_NO_SUCH_NAME = {socket.EAI_NONAME} | ({socket.EAI_NODATA} if hasattr(socket, "EAI_NODATA") else set())


def no_such_host(exc: BaseException) -> bool:
    """The resolver answered that the endpoint's host name does not exist: a typo, not an outage to wait out."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        exc = exc.reason or exc
    reason = getattr(exc, "_reason", None)
    return unresolvable(exc) and isinstance(reason, socket.gaierror) and reason.errno in _NO_SUCH_NAME


class Outage:
    """The retry budget of one store operation, shared by all its requests and threads: the clock starts when a
    request that then fails was sent, and a request that succeeds stops it (the store is making progress). Once
    the budget is spent the operation has failed: its other requests fail at once, without retrying."""

    def __init__(self, budget: float):
        self.budget = budget
        self.since: float | None = None
        self.error: StoreError | None = None
        self.warned = False
        self.lock = threading.Lock()


_OUTAGE: contextvars.ContextVar[Outage | None] = contextvars.ContextVar("medrl_store_outage", default=None)
_TIMEOUT: contextvars.ContextVar[urllib3.Timeout | None] = contextvars.ContextVar("medrl_s3_timeout", default=None)
_ATTEMPT: contextvars.ContextVar[float | None] = contextvars.ContextVar("medrl_s3_attempt", default=None)


def as_operation(method: Callable[..., T]) -> Callable[..., T]:
    """One retry budget for the method's requests (and those of the methods it calls), unless an operation
    is already under way in this context."""

    @functools.wraps(method)
    def run(self: S3Backend, *args: Any, **kwargs: Any) -> T:
        with self.operation():
            return method(self, *args, **kwargs)

    return run


class TimedPool(urllib3.PoolManager):
    """A pool whose requests take the timeout the running attempt set: the minio client passes none, and a frozen
    server must not hold an attempt longer than what is left of the budget. Once a request has failed during the
    attempt, in any thread (minio uploads the parts of a file on threads of its own), the clock runs: the client's
    follow-up requests (minio aborts a failed multipart upload, which a frozen server would hold for a whole read
    timeout more) get only what is left of the budget."""

    failed_at: float | None = None  # when the newest request that failed was sent (monotonic)

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any):  # type: ignore[override]
        timeout, outage, attempt = _TIMEOUT.get(), _OUTAGE.get(), _ATTEMPT.get()
        if timeout is not None and outage is not None:
            failures = [outage.since] if outage.since is not None else []
            if self.failed_at is not None and attempt is not None and self.failed_at >= attempt:
                failures.append(self.failed_at)
            if failures:
                left = max(min(failures) + outage.budget - time.monotonic(), 0.5)
                connect, read = timeout.connect_timeout, timeout.read_timeout
                timeout = urllib3.Timeout(
                    connect=min(connect, left) if isinstance(connect, float | int) else left,
                    read=min(read, left) if isinstance(read, float | int) else left,
                )
        if timeout is not None:
            kw.setdefault("timeout", timeout)
        started = time.monotonic()
        try:
            return super().urlopen(method, url, redirect=redirect, **kw)
        except Exception:
            self.failed_at = started
            raise


class HashingReader:
    """A file object that hashes what the client reads from it, so uploading and hashing share one pass."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data


class S3Backend:
    """Committed directories and single objects in an S3 bucket."""

    def __init__(self, settings: S3Settings):
        self.settings = settings
        cert_reqs = "CERT_REQUIRED" if settings.verify_tls else "CERT_NONE"
        ca_certs = settings.ca_bundle or os.environ.get("SSL_CERT_FILE") or None
        if ca_certs is None and settings.secure:
            import certifi

            ca_certs = certifi.where()
        # A frozen server accepts connections and never answers: without a read timeout an attempt never ends.
        # Reads wait at most the budget (at least 5 s, for a slow but live server; at most 60 s between bytes).
        self.connect_timeout = min(max(settings.retry_seconds, 1.0), 10.0)
        self.read_timeout = min(max(settings.retry_seconds, 5.0), 60.0)
        http = TimedPool(
            timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout),
            maxsize=max(10, settings.workers * 4),
            cert_reqs=cert_reqs,
            ca_certs=ca_certs,
            # No retries per request (urllib3 would log object keys); `call` retries whole operations.
            retries=False,
        )
        self.client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            session_token=settings.session_token,
            secure=settings.secure,
            region=settings.region,
            http_client=http,
            cert_check=settings.verify_tls,
        )
        self._buckets: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def operation(self, budget: float | None = None) -> Iterator[Outage]:
        """Share one retry budget among the requests made inside (the current operation's, if one is under way;
        `budget` starts a new one of its own, as the best-effort clean-up after a failure does)."""
        current = _OUTAGE.get()
        if current is not None and budget is None:
            yield current
            return
        outage = Outage(self.settings.retry_seconds if budget is None else budget)
        token = _OUTAGE.set(outage)
        try:
            yield outage
        finally:
            _OUTAGE.reset(token)

    def _attempt_timeout(self, outage: Outage) -> urllib3.Timeout:
        if outage.budget <= 0:  # a best-effort single try
            return urllib3.Timeout(connect=min(self.connect_timeout, 2.0), read=min(self.read_timeout, 5.0))
        if outage.since is None:
            return urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout)
        left = max(outage.since + outage.budget - time.monotonic(), 0.5)
        return urllib3.Timeout(connect=min(self.connect_timeout, left), read=min(self.read_timeout, left))

    def call(self, fn: Callable[[], T], what: str, before_retry: Callable[[], Any] | None = None) -> T:
        """Run `fn`, retrying it whole on transient failures while the operation's retry budget lasts."""
        outage = _OUTAGE.get() or Outage(self.settings.retry_seconds)
        delay = 0.2
        while True:
            if outage.error is not None:  # another request of this operation already spent the budget
                raise StoreError(str(outage.error))
            started = time.monotonic()
            token = _TIMEOUT.set(self._attempt_timeout(outage))
            attempt_token = _ATTEMPT.set(started)
            try:
                result = fn()
            except StoreError:
                raise
            except Exception as exc:
                if not transient(exc):
                    raise self.translate(exc, what) from None
                if unresolvable(exc) and not self.settings.endpoint_given:
                    raise StoreError(
                        f"{what}: the S3 endpoint {self.settings.url} does not resolve ({describe(exc)}); no "
                        "AWS_ENDPOINT_URL_S3 is set, so medrl tried AWS S3: set AWS_ENDPOINT_URL_S3 to the store "
                        "(http://host:port for MinIO or SeaweedFS)"
                    ) from None
                if no_such_host(exc):
                    raise StoreError(
                        f"{what}: the S3 endpoint {self.settings.url} does not resolve: its host name does not "
                        "exist (DNS); check AWS_ENDPOINT_URL_S3 (in the cluster, the store Service's name and "
                        "namespace)"
                    ) from None
                with outage.lock:
                    if outage.since is None:
                        outage.since = started
                    left = outage.since + outage.budget - time.monotonic()
                    if left <= 0:
                        outage.error = outage.error or StoreError(
                            f"{what}: the S3 endpoint {self.settings.url} kept failing for {outage.budget:g} s "
                            f"({describe(exc)}); check that it is up and that AWS_ENDPOINT_URL_S3 points at it, "
                            "or raise MEDRL_STORE_RETRY_SECONDS"
                        )
                        raise StoreError(str(outage.error)) from None
                    first, outage.warned = not outage.warned, True
                # One line per operation, not one per file and attempt: an outage of a 3,000-file upload is
                # one event.
                if first:
                    log.warning(
                        "%s: %s; retrying for up to %g s (MEDRL_STORE_RETRY_SECONDS)",
                        what,
                        describe(exc),
                        outage.budget,
                    )
                time.sleep(min(delay * random.uniform(0.75, 1.25), left))
                delay = min(delay * 2, 5.0)
                if before_retry is not None:
                    with contextlib.suppress(Exception):
                        before_retry()
            else:
                outage.since = None
                return result
            finally:
                _TIMEOUT.reset(token)
                _ATTEMPT.reset(attempt_token)

    def _parallel(self, jobs: Sequence[Callable[[], T]]) -> list[T]:
        """Run `jobs` on the transfer threads, in this operation (one budget); the first failure cancels the jobs
        not yet started and is raised."""
        pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="medrl-s3")
        try:
            futures = [pool.submit(contextvars.copy_context().run, job) for job in jobs]
            return [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def translate(self, exc: BaseException, what: str) -> StoreError:
        if isinstance(exc, S3Error):
            if exc.code in CREDENTIAL_CODES:
                return StoreError(
                    f"{what}: the store refused the request ({exc.code}); check AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY and the bucket's policy"
                )
            if exc.code == "NoSuchBucket":
                return StoreError(f"{what}: bucket '{exc.bucket_name}' does not exist; create it or fix the URI")
            return StoreError(f"{what}: {describe(exc)}")
        if isinstance(exc, ValueError):  # the client's checks of bucket and object names (which name no object)
            hint = "; S3 bucket names are 3-63 lowercase letters, digits, '-' and '.'" if "bucket" in str(exc) else ""
            return StoreError(f"{what}: {exc}{hint}")
        return StoreError(f"{what}: {describe(exc)}")

    def _missing_ok(self, fn: Callable[[], T]) -> Callable[[], T | None]:
        def run() -> T | None:
            try:
                return fn()
            except S3Error as exc:
                if exc.code in NOT_FOUND or exc.code == "NoSuchBucket":
                    return None
                raise

        return run

    def ensure_bucket(self, bucket: str) -> None:
        with self._lock:
            if bucket in self._buckets:
                return
        if not self.call(lambda: self.client.bucket_exists(bucket), f"bucket check of s3://{bucket}"):
            log.info("creating bucket s3://%s", bucket)

            def make() -> None:
                try:
                    self.client.make_bucket(bucket, location=self.settings.region)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

            self.call(make, f"creation of bucket s3://{bucket}")
        with self._lock:
            self._buckets.add(bucket)

    def _objects(self, bucket: str, prefix: str, recursive: bool) -> list:
        def run() -> list:
            try:
                return list(self.client.list_objects(bucket, prefix=prefix, recursive=recursive))
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    return []
                raise

        return self.call(run, f"listing of s3://{bucket}/{prefix}")

    def _get(self, bucket: str, key: str, what: str) -> bytes | None:
        def run() -> bytes:
            response = self.client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self.call(self._missing_ok(run), what)

    def _put_bytes(self, bucket: str, key: str, data: bytes, what: str) -> None:
        self.ensure_bucket(bucket)
        self.call(lambda: self.client.put_object(bucket, key, io.BytesIO(data), len(data)), what)

    def _remove(self, bucket: str, key: str, what: str) -> None:
        self.call(self._missing_ok(lambda: self.client.remove_object(bucket, key)), what)

    def abort_uploads(self, bucket: str, prefix: str, what: str) -> int:
        """Abort unfinished multipart uploads under `prefix` (left by a crash); returns how many. `what` names
        them in messages (never the key: it may be a data file's name)."""
        try:
            n = self.call(lambda: self._abort(bucket, prefix), f"clean-up of unfinished uploads of {what}")
        except StoreError as err:
            # Unfinished uploads are invisible to readers; failing to tidy them must not fail a commit.
            log.warning("%s", err)
            return 0
        if n:
            log.info("aborted %d unfinished multipart upload(s) of %s", n, what)
        return n

    # ------------------------------------------------------------------------------------------ files

    def _upload_file(self, bucket: str, key: str, path: Path, what: str) -> dict:
        def run() -> tuple[int, str]:
            # Opened inside the retried call: a file gone since the folder was listed fails as a StoreError that
            # names the artifact, not as an OSError naming the file (a patient's image, say).
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                reader = HashingReader(f)
                self.client.put_object(bucket, key, cast(BinaryIO, reader), size, part_size=self.settings.part_size)
            if reader.size != size:
                raise StoreError(f"{what}: the local file changed while it was uploaded; commit again")
            return size, reader.sha.hexdigest()

        # Before a retry, the torn multipart upload is aborted in one try: a store that is down would only
        # spend the budget twice.
        size, digest = self.call(run, what, before_retry=lambda: self._best_effort(lambda: self._abort(bucket, key)))
        return {"size": size, "sha256": digest}

    def _download_file(self, bucket: str, key: str, dest: Path | None, what: str) -> tuple[int, str]:
        """Stream one object into `dest` (or nowhere, to verify); returns (size, sha256)."""

        def run() -> tuple[int, str]:
            sha, size = hashlib.sha256(), 0
            if dest is not None:
                dest.parent.mkdir(parents=True, exist_ok=True)
            response = self.client.get_object(bucket, key)
            try:
                with contextlib.ExitStack() as stack:
                    out = stack.enter_context(dest.open("wb")) if dest is not None else None
                    for block in response.stream(CHUNK):
                        sha.update(block)
                        size += len(block)
                        if out is not None:
                            out.write(block)
            finally:
                response.close()
                response.release_conn()
            return size, sha.hexdigest()

        found = self.call(self._missing_ok(run), what)
        return found if found is not None else (-1, "")

    def _abort(self, bucket: str, prefix: str) -> int:
        n = 0
        for upload in self.client._list_multipart_uploads(bucket, prefix=prefix).uploads:
            if upload.object_name and upload.upload_id:
                self.client._abort_multipart_upload(bucket, upload.object_name, upload.upload_id)
                n += 1
        return n

    def _best_effort(self, fn: Callable[[], T]) -> T:
        """One try with short timeouts, outside the current operation's budget: tidying after a failure must
        not hang on the store that caused it."""
        with self.operation(budget=0.0):
            return self.call(fn, "clean-up")

    # ------------------------------------------------------------------------------------------ committing

    @contextlib.contextmanager
    def commit_dir(self, uri: str) -> Iterator[Path]:
        root = cache_root() / "staging"
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="commit-", dir=root))
        try:
            yield staging
            self.commit_from(staging, uri)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @as_operation
    def commit_from(self, local: Path, uri: str) -> None:
        """Upload `local` as the committed artifact `uri`: files, then MANIFEST.json, then COMMITTED.

        Over a committed version, the new one goes to `<uri>/.v-<id>/` and its COMMITTED marker (one object,
        written atomically) switches readers to it; only then is the old version removed. Until that moment the
        old one stays whole and readable, whatever fails."""
        bucket, key = split(uri)
        if not key:
            raise StoreError(f"{uri}: commit a directory under a prefix (s3://bucket/prefix), not a bucket's root")
        self.ensure_bucket(bucket)
        # Both a replacement (removing the previous version) and a first commit (removing what a torn attempt left)
        # delete what lies under the prefix: never another committed artifact.
        inner = self._nested(self._objects(bucket, key + "/", True), key)
        if inner:
            raise nested_refusal(uri, inner)
        version = f".v-{uuid.uuid4().hex[:12]}/" if self._marker(bucket, key, uri) is not None else ""
        files = local_files(local)
        jobs = [
            functools.partial(
                self._upload_file, bucket, f"{key}/{version}{rel}", path, f"upload of file {i + 1} to {uri}"
            )
            for i, (rel, path) in enumerate(files)
        ]
        try:
            entries = dict(zip((rel for rel, _ in files), self._parallel(jobs), strict=True))
            # Every upload was acknowledged, yet a store may keep an object under another name: SeaweedFS turns
            # '\\' in a key into '/'. Committed, such a file would be missing to every reader.
            listed = {o.object_name for o in self._objects(bucket, f"{key}/{version}", True)}
            lost = sum(f"{key}/{version}{rel}" not in listed for rel in entries)
            if lost:
                raise StoreError(
                    f"{uri}: {lost} of {len(entries)} uploaded file(s) are not in the store under their own names "
                    "(the store renamed or dropped them; SeaweedFS turns a '\\' in a file name into a folder). "
                    "Rename such files and commit again"
                )
            if not version:  # a first commit: what a torn earlier attempt left beside these files goes
                wanted = {f"{key}/{rel}" for rel in entries} | {f"{key}/{MANIFEST}"}
                stale = [name for name in listed if name not in wanted]
                self._remove_many(bucket, stale, f"removal of stale files of {uri}")
                self._remove_folders(bucket, key, stale, include_root=False)
            data = manifest_bytes({"version": 1, "files": entries})
            self._put_bytes(bucket, f"{key}/{version}{MANIFEST}", data, f"upload of {MANIFEST} to {uri}")
            self._put_bytes(bucket, f"{key}/{COMMITTED}", marker_text(data, version).encode(), f"commit of {uri}")
        except StoreError as err:
            raise type(err)(
                f"{err}; {self._orphans(bucket, f'{key}/{version}' if version else key + '/', uri)}"
            ) from None
        if version:
            self._tidy(bucket, key, version, uri)
        self.abort_uploads(bucket, key + "/", uri)

    def _orphans(self, bucket: str, prefix: str, uri: str) -> str:
        """Remove what an aborted upload left under `prefix` (never a committed version), in one try; returns a
        clause for the error message saying what became of it."""
        left_for_later = (
            f"what it had uploaded is not committed (readers ignore it) and could not be removed now; the next "
            f"commit to {uri} removes it"
        )
        current = _OUTAGE.get()
        if current is not None and current.error is not None:
            return left_for_later  # the store stayed down for the whole budget: a clean-up try would only add to it
        try:
            with self.operation(budget=0.0):
                keys = [o.object_name for o in self._objects(bucket, prefix, True)]
                self._remove_many(bucket, keys, f"removal of the aborted upload to {uri}")
                self._abort(bucket, prefix)
        except StoreError:
            return left_for_later
        return f"the {len(keys)} object(s) it had uploaded were removed, nothing was committed"

    def _tidy(self, bucket: str, key: str, version: str, uri: str) -> None:
        """After the switch to `version`: remove the previous version and what aborted replacements left."""
        keep = f"{key}/{version}"
        try:
            objects = self._objects(bucket, key + "/", True)
            stale = [
                o.object_name
                for o in objects
                if not o.object_name.startswith(keep) and o.object_name != f"{key}/{COMMITTED}"
            ]
            self._remove_many(bucket, stale, f"removal of the previous version of {uri}")
            self._remove_folders(bucket, key, stale, include_root=False)
        except StoreError as err:
            log.warning("%s is committed; its previous version is left for the next commit to remove (%s)", uri, err)

    def _remove_many(self, bucket: str, keys: list[str], what: str) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]

            def run(batch: list[str] = batch) -> None:
                errors = list(self.client.remove_objects(bucket, [DeleteObject(k) for k in batch]))
                failed = [e for e in errors if e.code not in NOT_FOUND]
                if failed:
                    raise StoreError(f"{what}: {len(failed)} object(s) could not be removed ({failed[0].code})")

            self.call(run, what)

    # ------------------------------------------------------------------------------------------ reading

    def _marker(self, bucket: str, key: str, uri: str) -> tuple[str, str] | None:
        """(manifest sha256, version prefix) of the committed version at `key`, or None."""
        data = self._get(bucket, f"{key}/{COMMITTED}", f"read of {uri}/{COMMITTED}")
        return None if data is None else parse_marker(data.decode(errors="replace"))

    def committed_version(self, uri: str) -> tuple[str, str]:
        bucket, key = split(uri)
        marker = self._marker(bucket, key, uri)
        if marker is None:
            raise NotCommittedError(
                f"{uri} is not a committed artifact (no {COMMITTED} marker): the stage that writes it did not "
                "finish. Re-run that stage."
            )
        return marker

    @as_operation
    def is_committed(self, uri: str) -> bool:
        bucket, key = split(uri)
        stat = self.call(
            self._missing_ok(lambda: self.client.stat_object(bucket, f"{key}/{COMMITTED}")), f"check of {uri}"
        )
        return stat is not None

    def _manifest(self, uri: str) -> tuple[str, str, bytes, dict]:
        """(manifest sha256, version prefix, manifest bytes, manifest) of the committed version."""
        bucket, key = split(uri)
        expected, version = self.committed_version(uri)
        data = self._get(bucket, f"{key}/{version}{MANIFEST}", f"read of {uri}/{MANIFEST}")
        if data is None or hashlib.sha256(data).hexdigest() != expected:
            raise IntegrityError(f"{uri}: {MANIFEST} does not match its {COMMITTED} marker; the artifact is damaged")
        try:
            return expected, version, data, json.loads(data)
        except ValueError:
            raise IntegrityError(f"{uri}: {MANIFEST} is not JSON; the artifact is damaged") from None

    @as_operation
    def manifest(self, uri: str) -> dict:
        return self._manifest(uri)[3]

    @as_operation
    def member(self, uri: str, rel: str) -> bytes | None:
        _, version, _, doc = self._manifest(uri)
        meta = doc["files"].get(rel)
        if meta is None:
            return None
        bucket, key = split(uri)
        data = self._get(bucket, f"{key}/{version}{rel}", f"read of a file of {uri}")
        return checked_member(uri, rel, data or b"", meta)

    def _fetch_all(self, uri: str, version: str, files: dict, into: Path | None) -> None:
        bucket, key = split(uri)
        items = sorted(files.items())

        def one(i: int, rel: str, meta: dict) -> None:
            dest = None
            if into is not None:
                dest = into / rel  # its folder is made inside the retried call: an OSError there names no path
            what = f"download of file {i + 1} of {uri}"
            size, digest = self._download_file(bucket, f"{key}/{version}{rel}", dest, what)
            if size < 0:
                raise damaged(uri, rel, i, len(items), "is missing from the store but listed")
            if size != meta["size"] or digest != meta["sha256"]:
                raise damaged(uri, rel, i, len(items))

        self._parallel([functools.partial(one, i, rel, meta) for i, (rel, meta) in enumerate(items)])

    @as_operation
    def download(self, uri: str, dest: Path, replace: bool = True, scratch: bool = False) -> Path:
        """Fetch the committed artifact into `dest` (replaced as a whole), checking every file's sha256.

        With `replace=False` a `dest` that another process placed first is kept (and ours dropped): readers
        may already be using it."""
        if replace and not scratch:
            check_output(dest)  # before the transfer, so a refused destination costs nothing
        _, version, data, doc = self._manifest(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".staging-{dest.name}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            self._fetch_all(uri, version, doc["files"], staging)
            (staging / MANIFEST).write_bytes(data)
            (staging / COMMITTED).write_text(marker_text(data))
            if replace:
                place_dir(staging, dest, scratch)
            else:
                try:
                    os.rename(staging, dest)  # fails on a non-empty `dest`: someone else's finished copy
                except OSError:
                    if not (dest / COMMITTED).is_file():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record_verified(dest)  # every file was just hashed: `store.verified` need not hash them again
        return dest

    @as_operation
    def open_dir(self, uri: str, verify: bool = False) -> Path:
        """The artifact in the local cache, downloaded (and verified) on first use of each committed version."""

        bucket, key = split(uri)
        digest, _ = self.committed_version(uri)
        local = cache_root() / "s3" / bucket / f"{key}@{digest[:16]}"
        if (local / COMMITTED).is_file():
            try:
                verify_dir(local, uri, cache=not verify)  # the cached copy may have changed since it was downloaded
                return local
            except IntegrityError:
                # The store's copy is the artifact: a damaged local copy is fetched again (and checked on the way),
                # never reported as a damaged artifact whose stage would have to run again.
                log.warning("%s: its copy in the local cache (%s) is damaged; downloading it again", uri, cache_root())
                return self.download(uri, local, scratch=True)
        return self.download(uri, local, replace=False)

    @staticmethod
    def _nested(objects: list, key: str) -> list[str]:
        """Relative paths of the committed artifacts below `key` among `objects` (a recursive listing under it)."""
        tail = "/" + COMMITTED
        return outermost(o.object_name[len(key) + 1 : -len(tail)] for o in objects if o.object_name.endswith(tail))

    @as_operation
    def nested(self, uri: str) -> list[str]:
        bucket, key = split(uri)
        return self._nested(self._objects(bucket, key + "/", True), key)

    @as_operation
    def verify(self, uri: str) -> dict:
        """Hash every file in the store against the manifest, without keeping a copy; a file under the artifact's
        prefix that the manifest does not list (not a kept version, not a nested artifact's) fails it too."""
        _, version, _, doc = self._manifest(uri)
        files = doc["files"]
        self._fetch_all(uri, version, files, None)
        bucket, key = split(uri)
        objects = self._objects(bucket, key + "/", True)
        inner = self._nested(objects, key)
        extra = []
        for o in objects:
            rel = o.object_name[len(key) + 1 :]
            if rel.endswith("/") or rel in (MANIFEST, COMMITTED):
                continue  # folder entries (SeaweedFS) and the commit markers
            if version:
                if not rel.startswith(version):
                    continue  # what a replacement left of the previous version: readers never take it
                rel = rel[len(version) :]
            elif rel.startswith(".v-"):
                continue  # an aborted replacement's upload, removed by the next commit
            if rel != MANIFEST and rel not in files and not any(rel.startswith(n + "/") for n in inner):
                extra.append(rel)
        if extra:
            raise extra_files(uri, extra)
        return {"files": len(files), "bytes": sum(f["size"] for f in files.values())}

    # ------------------------------------------------------------------------------------------ objects

    @as_operation
    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split(uri)
        self._put_bytes(bucket, key, data, f"upload of {uri}")

    @as_operation
    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split(uri)
        data = self._get(bucket, key, f"read of {uri}")
        if data is None:
            raise StoreError(f"{uri} does not exist")
        return data

    @as_operation
    def exists(self, uri: str) -> bool:
        bucket, key = split(uri)
        if not key:
            return bool(self.call(lambda: self.client.bucket_exists(bucket), f"check of {uri}"))

        def stat() -> Any:
            try:
                return self.client.stat_object(bucket, key)
            except S3Error as exc:
                if exc.code in NOT_FOUND or exc.code == "NoSuchBucket":
                    return None
                raise

        if self.call(stat, f"check of {uri}") is not None:
            return True
        return bool(self._objects(bucket, key + "/", False))

    @as_operation
    def entries(self, uri: str) -> list[tuple[str, bool]]:
        """(name, is folder) of what lies directly under `uri`."""
        bucket, key = split(uri)
        prefix = key + "/" if key else ""
        found: dict[str, bool] = {}
        for o in self._objects(bucket, prefix, False):
            name = o.object_name[len(prefix) :]
            is_dir = name.endswith("/")
            name = name.rstrip("/")
            if name and not name.startswith("."):
                found[name] = found.get(name, False) or is_dir
        return sorted(found.items())

    @as_operation
    def delete(self, uri: str) -> None:
        bucket, key = split(uri)
        if not key:
            raise StoreError(f"{uri}: refusing to empty a whole bucket; delete prefixes inside it")
        self._remove(bucket, f"{key}/{COMMITTED}", f"un-commit of {uri}")
        keys = [o.object_name for o in self._objects(bucket, key + "/", True)]
        self._remove_many(bucket, keys, f"removal of {uri}")
        self.abort_uploads(bucket, key + "/", uri)
        self._remove(bucket, key, f"removal of {uri}")
        self._remove_folders(bucket, key, keys, include_root=True)

    def _remove_folders(self, bucket: str, key: str, removed: list[str], include_root: bool) -> None:
        """Filer-backed stores (SeaweedFS) keep emptied folders, which listings would still show: remove those
        the removed keys lived in, deepest first. On MinIO and AWS such keys do not exist: the calls are no-ops
        (and a folder that still holds files stays)."""
        folders = {key + "/"} if include_root else set()
        for k in removed:
            parts = k[len(key) + 1 :].split("/")[:-1]
            folders.update(f"{key}/{'/'.join(parts[:n])}/" for n in range(1, len(parts) + 1))
        for folder in sorted(folders, key=lambda f: -f.count("/")):
            with contextlib.suppress(StoreError):
                self._remove(bucket, folder, f"removal of an empty folder under s3://{bucket}/{key}")

    @as_operation
    def list(self, uri: str) -> list[str]:  # last: below it, `list` in annotations would mean this method
        return [name for name, _ in self.entries(uri)]
