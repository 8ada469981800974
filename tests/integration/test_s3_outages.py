"""A dead (SIGKILL) or frozen (SIGSTOP) SeaweedFS on loopback: every store operation fails within one retry
budget (per operation, not per file) plus a few seconds, with one line naming the endpoint and the fix; a
missing endpoint whose default name does not resolve fails at once. Real server, real `medrl` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from medrl import store
from medrl.store import s3
from tests.support.servers import kill_mid_upload, s3_environment

BUDGET = 1.5
# A `medrl` process needs a few seconds to start on a loaded machine; the failure itself comes within BUDGET + 3.
SLACK = 12


def medrl(*args: str, timeout: float = 45) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "medrl", *args], capture_output=True, text=True, env=dict(os.environ), timeout=timeout
    )
    return done, time.monotonic() - start


def one_line_failure(done: subprocess.CompletedProcess, endpoint: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and endpoint in errors[0] and "MEDRL_STORE_RETRY_SECONDS" in errors[0], done.stderr
    assert len(lines) <= 3, f"one error line (and at most a retry notice), got {len(lines)}:\n{done.stderr[-2000:]}"


def test_a_frozen_then_dead_store_fails_each_operation_within_one_budget(own_seaweed, monkeypatch, tmp_path):
    bucket = s3_environment(monkeypatch, own_seaweed, tmp_path, retry_seconds=BUDGET)
    uri = f"{bucket}/datasets/many"
    src = tmp_path / "many"
    src.mkdir()
    for i in range(60):  # one budget per file used to make this 60 / 4 workers x the budget
        (src / f"{i}.txt").write_text(str(i))
    store.commit_from(src, uri)
    group = own_seaweed.proc.pid

    os.killpg(group, signal.SIGSTOP)  # frozen: connections are accepted by the kernel, nothing answers
    try:
        for args in (["store", "ls", f"{bucket}/datasets"], ["store", "get", uri, str(tmp_path / "copy")]):
            done, took = medrl(*args)
            one_line_failure(done, own_seaweed.endpoint)
            assert took < BUDGET + SLACK, f"{args[1]} against a frozen store took {took:.1f} s"
    finally:
        os.killpg(group, signal.SIGCONT)

    own_seaweed.kill()
    done, took = medrl("store", "put", "--replace", str(src), uri)
    one_line_failure(done, own_seaweed.endpoint)
    assert took < BUDGET + SLACK, f"put of 60 files against a dead store took {took:.1f} s"
    start = time.monotonic()
    with pytest.raises(store.StoreError, match="kept failing"):
        store.download(uri, tmp_path / "copy2")
    assert time.monotonic() - start < BUDGET + 3
    assert not (tmp_path / "copy2").exists()


def test_no_endpoint_and_an_unresolvable_default_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    monkeypatch.setenv("MEDRL_STORE_RETRY_SECONDS", "30")
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    # The default endpoint (AWS) stands for any name this machine cannot resolve; .invalid never resolves.
    monkeypatch.setattr(s3, "DEFAULT_ENDPOINT", "https://medrl-store.invalid")
    start = time.monotonic()
    with pytest.raises(store.StoreError, match="AWS_ENDPOINT_URL_S3") as err:
        store.ls("s3://bucket/prefix")
    assert time.monotonic() - start < 5 and "medrl-store.invalid" in str(err.value)


def test_a_store_frozen_mid_upload_fails_within_the_budget(own_seaweed, monkeypatch, tmp_path):
    """Once the budget is spent the store is down: the clean-up of the aborted upload is not tried (it used to add
    its own try, up to 5 s, past the budget) and is left to the next commit, as the error says."""
    budget = 6.0  # above the 5 s floor of a read's timeout, so the budget alone bounds the wait
    bucket = s3_environment(monkeypatch, own_seaweed, tmp_path, retry_seconds=budget)
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.safetensors").write_bytes(os.urandom(12 << 20))  # multipart: several reads
    original_read = s3.HashingReader.read
    frozen = []

    def read_then_freeze(self, size=-1):
        data = original_read(self, size)
        if self.size > (6 << 20) and not frozen:
            os.killpg(own_seaweed.proc.pid, signal.SIGSTOP)
            frozen.append(time.monotonic())
        return data

    monkeypatch.setattr(s3.HashingReader, "read", read_then_freeze)
    try:
        with pytest.raises(store.StoreError, match=r"kept failing.*the next commit to .* removes it"):
            store.commit_from(src, f"{bucket}/models/m")
        took = time.monotonic() - frozen[0]
    finally:
        os.killpg(own_seaweed.proc.pid, signal.SIGCONT)
    # observed 6.5 s; 12.0 s when minio's abort of the multipart upload took a whole read timeout of its own
    assert took < budget + 2, f"failed {took:.1f} s after the store froze, budget {budget:g} s"


def test_a_configured_endpoint_whose_name_does_not_exist_fails_at_once(monkeypatch, tmp_path):
    """A typo in AWS_ENDPOINT_URL_S3 is no outage: retrying it for the whole budget (120 s by default) only delays
    the error. (A resolver that is down, EAI_AGAIN, is still retried.)"""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://medrl-store.invalid:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sk")
    monkeypatch.setenv("MEDRL_STORE_RETRY_SECONDS", "30")
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    start = time.monotonic()
    with pytest.raises(store.StoreError, match=r"medrl-store.invalid:9000 does not resolve.*AWS_ENDPOINT_URL_S3"):
        store.ls("s3://bucket/prefix")
    assert time.monotonic() - start < 10, "not retried for the 30 s budget"


def objects(server, uri: str) -> list[str]:
    bucket, key = s3.split(uri)
    found = server.client().list_objects(bucket, key + "/", recursive=True)
    return sorted(o.object_name[len(key) + 1 :] for o in found)


def test_replace_keeps_the_previous_version_readable_under_an_outage(own_seaweed, monkeypatch, tmp_path):
    bucket = s3_environment(monkeypatch, own_seaweed, tmp_path, retry_seconds=BUDGET)
    uri = f"{bucket}/models/base"
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    for folder, text in ((v1, "one"), (v2, "two")):
        (folder / "sub").mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(text.encode() * (3 << 20))  # multipart: several reads
        (folder / "sub" / "config.json").write_text(text)
    store.commit_from(v1, uri)

    def restart_and_read() -> str:
        own_seaweed.start()
        monkeypatch.setenv("MEDRL_STORE_RETRY_SECONDS", "60")  # the restarted server may answer 500 for a moment
        root = store.open_dir(uri, verify=True)
        monkeypatch.setenv("MEDRL_STORE_RETRY_SECONDS", str(BUDGET))
        return (root / "sub" / "config.json").read_text()

    # The server dies mid-upload of the new version's weights.
    original_read = kill_mid_upload(monkeypatch, own_seaweed, after=6 << 20)
    with pytest.raises(store.StoreError, match="kept failing") as err:
        store.commit_from(v2, uri)
    assert "not committed" in str(err.value), "the orphans of the aborted upload are reported"
    monkeypatch.setattr(s3.HashingReader, "read", original_read)
    assert restart_and_read() == "one"

    # The server dies after every file and the manifest are up, just before the switch to the new version.
    original_put = s3.S3Backend._put_bytes

    def put_then_kill(self, bucket_, key, data, what):
        if key.endswith("/" + store.COMMITTED):
            own_seaweed.kill()
        return original_put(self, bucket_, key, data, what)

    monkeypatch.setattr(s3.S3Backend, "_put_bytes", put_then_kill)
    with pytest.raises(store.StoreError, match="kept failing"):
        store.commit_from(v2, uri)
    monkeypatch.setattr(s3.S3Backend, "_put_bytes", original_put)
    assert restart_and_read() == "one"

    # A replacement that finishes switches to the new version and removes the old one and both aborted ones.
    store.commit_from(v2, uri)
    assert (store.open_dir(uri, verify=True) / "sub" / "config.json").read_text() == "two"
    left = objects(own_seaweed, uri)
    assert store.COMMITTED in left and len([k for k in left if k.endswith(".safetensors")]) == 1, left
    assert len([k for k in left if k.endswith("config.json")]) == 1, left
