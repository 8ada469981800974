"""The S3 store against a real SeaweedFS (`weed mini` on loopback): round trip, multipart, listing, a flipped
byte, a server killed mid-upload, a server restarted mid-commit, and the `medrl store` commands."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medrl import store
from medrl.store import checkpoints, s3
from tests.support.servers import kill_mid_upload


def fill(root, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_round_trip_listing_and_cache(s3_bucket):
    uri = f"{s3_bucket}/exp/run-1/data"
    files = {"train.jsonl": b'{"id": "1"}\n', "images/a/1.png": os.urandom(3000), "summary.json": b"{}"}
    with store.commit_dir(uri) as staging:
        fill(staging, files)
        assert not store.is_committed(uri)
    store.write_text(f"{s3_bucket}/exp/run-1/config.yaml", "name: x\n")

    assert store.is_committed(uri)
    root = store.open_dir(uri, verify=True)
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()} == {
        **files,
        "MANIFEST.json": (root / "MANIFEST.json").read_bytes(),
        "COMMITTED": (root / "COMMITTED").read_bytes(),
    }
    assert store.open_dir(uri) == root  # the cached copy of this committed version is reused

    assert store.list_dir(f"{s3_bucket}/exp/run-1") == ["config.yaml", "data"]
    assert store.list_dir(uri) == ["COMMITTED", "MANIFEST.json", "images", "summary.json", "train.jsonl"]
    entries = {e["name"]: e for e in store.ls(f"{s3_bucket}/exp/run-1")}
    assert entries["config.yaml"]["kind"] == "object"
    assert entries["data"]["kind"] == "committed" and entries["data"]["files"] == 3
    assert entries["data"]["bytes"] == sum(len(v) for v in files.values())
    assert store.exists(uri) and store.exists(f"{s3_bucket}/exp/run-1/config.yaml")
    assert not store.exists(f"{s3_bucket}/exp/run-2") and store.list_dir(f"{s3_bucket}/nothing") == []
    assert store.read_text(f"{s3_bucket}/exp/run-1/config.yaml") == "name: x\n"
    with pytest.raises(store.StoreError, match="does not exist"):
        store.read_text(f"{s3_bucket}/exp/run-1/missing.yaml")


def test_multipart_upload_round_trips(s3_bucket, seaweed):
    uri = f"{s3_bucket}/ckpt/step-1"
    big = os.urandom(12 * 1024 * 1024 + 123)  # three 5 MiB parts
    with store.commit_dir(uri) as staging:
        fill(staging, {"model.safetensors": big, "trainer_state.json": b'{"global_step": 1}'})
    bucket, key = s3.split(uri)
    etag = seaweed.client().stat_object(bucket, f"{key}/model.safetensors").etag
    assert etag.endswith("-3"), f"expected a 3-part multipart ETag, got {etag}"
    assert store.manifest(uri)["files"]["model.safetensors"]["sha256"] == hashlib.sha256(big).hexdigest()
    assert (store.open_dir(uri) / "model.safetensors").read_bytes() == big
    assert store.verify(uri) == {"files": 2, "bytes": len(big) + 18}


def test_recommit_replaces_files_and_delete_removes_everything(s3_bucket, seaweed):
    uri = f"{s3_bucket}/report"
    with store.commit_dir(uri) as staging:
        fill(staging, {"report.md": b"v1", "figures/old.png": b"png", "figures/kept.png": b"k", "old/x.png": b"x"})
    assert store.list_dir(uri) == ["COMMITTED", "MANIFEST.json", "figures", "old", "report.md"]
    with store.commit_dir(uri) as staging:
        fill(staging, {"report.md": b"v2", "figures/kept.png": b"k"})
    # The new version went up beside the old one (.v-<id>/), the marker switched to it, then the old one went.
    bucket, key = s3.split(uri)
    left = sorted(o.object_name for o in seaweed.client().list_objects(bucket, key + "/", recursive=True))
    version = store.parse_marker(store.read_text(f"{uri}/COMMITTED"))[1]
    assert version.startswith(".v-")
    assert left == [f"{key}/{version}{rel}" for rel in ("MANIFEST.json", "figures/kept.png", "report.md")] + [
        f"{key}/COMMITTED"
    ]
    assert store.list_dir(uri) == ["COMMITTED"]  # the version folder is hidden, like staging folders
    assert (store.open_dir(uri) / "report.md").read_bytes() == b"v2"
    store.delete(uri)
    assert not store.is_committed(uri) and store.list_dir(s3_bucket) == []


def test_readers_ignore_uncommitted_folders(s3_bucket, seaweed):
    client = seaweed.client()
    bucket, key = s3.split(f"{s3_bucket}/ckpt")
    with store.commit_dir(f"{s3_bucket}/ckpt/step-2") as staging:
        fill(staging, {"w.bin": b"two"})
    # A torn upload: files and even a manifest, but no COMMITTED marker.
    client.put_object(bucket, f"{key}/step-4/w.bin", io.BytesIO(b"four"), 4)
    client.put_object(bucket, f"{key}/step-4/MANIFEST.json", io.BytesIO(b"{}"), 2)
    with pytest.raises(store.NotCommittedError, match="did not finish"):
        store.open_dir(f"{s3_bucket}/ckpt/step-4")
    assert checkpoints.latest_committed(f"{s3_bucket}/ckpt") == (2, f"{s3_bucket}/ckpt/step-2")
    kinds = {e["name"]: e["kind"] for e in store.ls(f"{s3_bucket}/ckpt")}
    assert kinds == {"step-2": "committed", "step-4": "folder"}


def test_a_flipped_byte_fails_the_download_loudly(s3_bucket, seaweed, tmp_path):
    uri = f"{s3_bucket}/data"
    payload = bytes(range(256)) * 64
    with store.commit_dir(uri) as staging:
        fill(staging, {"a.txt": b"fine", "images/patient-42.png": payload})
    bucket, key = s3.split(uri)
    flipped = bytearray(payload)
    flipped[100] ^= 0x01
    seaweed.client().put_object(bucket, f"{key}/images/patient-42.png", io.BytesIO(bytes(flipped)), len(flipped))

    with pytest.raises(store.IntegrityError) as err:
        store.open_dir(uri)
    message = str(err.value)
    assert "does not match its sha256" in message and uri in message and "damaged" in message
    assert "patient-42" not in message and err.value.file == "images/patient-42.png"
    assert not list((tmp_path / "cache" / "s3").rglob("*.png")), "a damaged download must not stay in the cache"
    with pytest.raises(store.IntegrityError):
        store.verify(uri)
    with pytest.raises(store.IntegrityError):
        store.download(uri, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_wrong_credentials_a_bad_bucket_and_a_dead_endpoint_are_named(s3_bucket, monkeypatch):
    with pytest.raises(store.StoreError, match="bucket names are 3-63 lowercase"):
        store.write_text("s3://Bad_Bucket/x.txt", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(store.StoreError, match="AWS_SECRET_ACCESS_KEY"):
        store.write_text(f"{s3_bucket}/x.txt", "x")
    from tests.support.servers import free_ports

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_ports(1)[0]}")
    monkeypatch.setenv("MEDRL_STORE_RETRY_SECONDS", "1")
    with pytest.raises(store.StoreError, match=r"kept failing for 1 s.*MEDRL_STORE_RETRY_SECONDS"):
        store.read_text(f"{s3_bucket}/x.txt")


def test_server_killed_mid_upload_leaves_no_checkpoint_and_resume_takes_the_previous(
    own_seaweed, monkeypatch, tmp_path
):
    from tests.support.servers import s3_environment

    bucket = s3_environment(monkeypatch, own_seaweed, tmp_path, retry_seconds=2)
    ckpts = f"{bucket}/run/arms/grpo/checkpoints"
    step1 = tmp_path / "ckpt1"
    fill(step1, {"model.safetensors": os.urandom(1 << 20), "trainer_state.json": b'{"global_step": 1}'})
    checkpoints.commit_checkpoint(step1, ckpts, 1, keep=2)

    # The server dies (SIGKILL) once 6 MiB of a 16 MiB multipart upload have been read.
    step2 = tmp_path / "ckpt2"
    fill(step2, {"model.safetensors": os.urandom(16 << 20), "trainer_state.json": b'{"global_step": 2}'})
    original_read = kill_mid_upload(monkeypatch, own_seaweed, after=6 << 20)
    with pytest.raises(store.StoreError, match="kept failing"):
        checkpoints.commit_checkpoint(step2, ckpts, 2, keep=2)
    monkeypatch.setattr(s3.HashingReader, "read", original_read)

    own_seaweed.start()
    monkeypatch.setenv("MEDRL_STORE_RETRY_SECONDS", "60")  # the restarted server may answer 500 for a moment
    assert not store.is_committed(f"{ckpts}/step-2")
    b, key = s3.split(ckpts)
    unfinished = own_seaweed.client()._list_multipart_uploads(b, prefix=key + "/").uploads
    assert [u.object_name for u in unfinished] == [f"{key}/step-2/model.safetensors"]  # invisible, not yet tidied
    assert "model.safetensors" not in store.list_dir(f"{ckpts}/step-2")
    restored = checkpoints.restore_latest(ckpts, tmp_path / "resume")
    assert restored == tmp_path / "resume" / "checkpoint-1"
    assert (restored / "trainer_state.json").read_bytes() == b'{"global_step": 1}'

    # The next checkpoint's commit tidies up: the torn step-2 and its unfinished multipart upload go.
    checkpoints.commit_checkpoint(step2, ckpts, 3, keep=2)
    assert [n for n, _ in checkpoints.steps(ckpts)] == [1, 3]
    assert own_seaweed.client()._list_multipart_uploads(b, prefix=key + "/").uploads == []


def test_server_restarted_mid_commit_is_carried_through_by_retries(own_seaweed, monkeypatch, tmp_path, caplog):
    from tests.support.servers import s3_environment

    bucket = s3_environment(monkeypatch, own_seaweed, tmp_path, retry_seconds=60)
    uri = f"{bucket}/ckpt/step-1"
    local = tmp_path / "ckpt"
    fill(local, {f"shard-{i}.bin": os.urandom(2 << 20) for i in range(6)})
    original_read = s3.HashingReader.read
    restart = threading.Thread(target=lambda: (time.sleep(1.5), own_seaweed.start()))
    once = threading.Lock()

    def read_and_restart(self, size=-1):
        with once:  # uploads run in several threads: the first read kills the server, once
            if restart.ident is None:
                own_seaweed.kill()  # the server goes away for a few seconds, then comes back on the same data
                restart.start()
        return original_read(self, size)

    monkeypatch.setattr(s3.HashingReader, "read", read_and_restart)
    with caplog.at_level("WARNING", logger="medrl.store"):
        store.commit_from(local, uri)
    restart.join()
    assert own_seaweed.proc.poll() is None and any("retrying" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "shard-" in r.getMessage()], "log lines must not name data files"
    root = store.open_dir(uri, verify=True)
    for path in local.iterdir():
        assert (root / path.name).read_bytes() == path.read_bytes()


def test_store_commands(s3_bucket, tmp_path, seaweed):
    uri = f"{s3_bucket}/run/arms/sft/model"
    with store.commit_dir(uri) as staging:
        fill(staging, {"model.safetensors": b"w" * 5000, "config.json": b"{}"})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def medrl(*args):
        return subprocess.run([sys.executable, "-m", "medrl", "store", *args], capture_output=True, text=True, env=env)

    ls = medrl("ls", f"{s3_bucket}/run/arms/sft")
    assert ls.returncode == 0 and "model/" in ls.stdout and "committed" in ls.stdout and "2 files" in ls.stdout
    got = medrl("get", uri, str(tmp_path / "model"))
    assert got.returncode == 0 and (tmp_path / "model" / "model.safetensors").read_bytes() == b"w" * 5000
    ok = medrl("verify", uri)
    assert ok.returncode == 0 and "ok: 2 files" in ok.stdout

    bucket, key = s3.split(uri)
    seaweed.client().put_object(bucket, f"{key}/config.json", io.BytesIO(b"[]"), 2)
    bad = medrl("verify", uri)
    assert bad.returncode == 1 and "DAMAGED" in bad.stderr and "config.json" not in bad.stderr
    named = medrl("verify", uri, "--show-paths")
    assert named.returncode == 1 and "damaged file: config.json" in named.stderr
    missing = medrl("get", f"{s3_bucket}/run/nothing", str(tmp_path / "x"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    damaged_ls = medrl("ls", f"{s3_bucket}/run/arms")  # sft's config.json is damaged, but not its manifest
    assert damaged_ls.returncode == 0 and "sft/" in damaged_ls.stdout
    seaweed.client().put_object(bucket, f"{key}/MANIFEST.json", io.BytesIO(b"{}"), 2)
    entries = {e["name"]: e for e in store.ls(f"{s3_bucket}/run/arms/sft")}
    assert entries["model"]["kind"] == "damaged" and "does not match" in entries["model"]["error"]

    new_bucket = f"s3://medrl-new-{os.urandom(3).hex()}"  # `store put` creates a missing bucket, as prep does
    put = medrl("put", str(tmp_path / "model"), f"{new_bucket}/models/sft")
    assert put.returncode == 0 and "(2 files" in put.stdout, put.stderr
    assert store.is_committed(f"{new_bucket}/models/sft")


def test_a_dataset_put_in_the_store_is_prepared_from_its_uri(s3_bucket, tmp_path):
    """What a cluster run does: the download is committed with `medrl store put`, prep reads it by URI."""
    from tests.support.medvqa_fixtures import pmc_vqa

    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=12, n_test=4)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def medrl(*args):
        return subprocess.run([sys.executable, "-m", "medrl", *args], capture_output=True, text=True, env=env)

    uri = f"{s3_bucket}/datasets/pmc-vqa"
    put = medrl("store", "put", str(src), uri)
    assert put.returncode == 0 and "(18 files" in put.stdout, put.stderr
    out = f"{s3_bucket}/prepared"
    prep = medrl("prep", "--source", "pmc-vqa", "--input", uri, "--out", out)
    assert prep.returncode == 0, prep.stderr
    summary = json.loads((store.open_dir(out) / "summary.json").read_text())
    assert (summary["train"], summary["test"], summary["quarantined"]) == (12, 4, 0)


def test_concurrent_readers_share_one_cached_copy(s3_bucket):
    from concurrent.futures import ThreadPoolExecutor

    uri = f"{s3_bucket}/base-model"
    weights = os.urandom(1 << 20)
    with store.commit_dir(uri) as staging:
        fill(staging, {"model.safetensors": weights, "config.json": b"{}"})
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: store.open_dir(uri), range(4)))
    assert len(set(paths)) == 1 and (paths[0] / "model.safetensors").read_bytes() == weights
    assert not [p for p in paths[0].parent.iterdir() if p.name.startswith(".staging")]


def test_a_run_lease_in_s3_stops_a_second_run(s3_bucket):
    from medrl.store.layout import RunLayout

    run = RunLayout.create(s3_bucket, "exp", "run-1")
    with run.lease(ttl=30):
        with pytest.raises(store.LeaseError, match="in use by another run"):
            run.lease(ttl=30)
        assert store.list_dir(run.uri) == [], "the lease object is hidden from listings"
    run.lease(ttl=30).release()
    assert not store.exists(f"{run.uri}/.lease")


# ------------------------------------------------------------------------- nothing lost, nothing silent (issue 30)


def put_folder(tmp_path, name: str, files: dict[str, bytes]):
    folder = tmp_path / name
    fill(folder, files)
    return folder


def test_replace_refuses_to_delete_a_nested_committed_artifact(s3_bucket, seaweed, tmp_path):
    """The issue's case: `put a s3://b/x`, `put c s3://b/x/inner`, `put c s3://b/x --replace` deleted x/inner."""
    a = put_folder(tmp_path, "a", {"f.txt": b"a"})
    c = put_folder(tmp_path, "c", {"f.txt": b"c"})
    x = f"{s3_bucket}/x"
    store.put_artifact(a, x)
    store.put_artifact(c, f"{x}/inner")
    with pytest.raises(store.OutputError, match=rf"{x} holds another committed artifact, {x}/inner"):
        store.put_artifact(c, x, replace=True)
    assert (store.open_dir(f"{x}/inner", verify=True) / "f.txt").read_bytes() == b"c"
    assert (store.open_dir(x, verify=True) / "f.txt").read_bytes() == b"a"
    # a first commit over a prefix holding artifacts (it tidies what lies there) is refused the same way
    run = f"{s3_bucket}/runs/r1"
    store.put_artifact(c, f"{run}/data")
    with pytest.raises(store.OutputError, match=rf"{run} holds another committed artifact, {run}/data"):
        store.put_artifact(a, run)
    assert store.verify(f"{run}/data")["files"] == 1


def test_a_missing_manifest_is_listed_and_verified_as_damaged(s3_bucket, seaweed, tmp_path):
    folder = put_folder(tmp_path, "m", {"w.bin": b"w"})
    for name in ("good", "broken", "other"):
        store.put_artifact(folder, f"{s3_bucket}/models/{name}")
    bucket, key = s3.split(f"{s3_bucket}/models/broken")
    seaweed.client().remove_object(bucket, f"{key}/MANIFEST.json")
    entries = {e["name"]: e["kind"] for e in store.ls(f"{s3_bucket}/models")}
    assert entries == {"good": "committed", "broken": "damaged", "other": "committed"}
    with pytest.raises(store.IntegrityError, match="damaged"):
        store.verify(f"{s3_bucket}/models/broken")


def test_verify_fails_an_object_added_after_the_commit(s3_bucket, seaweed, tmp_path):
    uri = f"{s3_bucket}/data"
    store.put_artifact(put_folder(tmp_path, "d", {"train.jsonl": b"{}\n", "images/a.png": b"png"}), uri)
    store.put_artifact(put_folder(tmp_path, "e", {"x.bin": b"x"}), f"{uri}/inner")  # a nested artifact is its own
    assert store.verify(uri)["files"] == 2
    bucket, key = s3.split(uri)
    seaweed.client().put_object(bucket, f"{key}/images/patient-7.png", io.BytesIO(b"new"), 3)
    with pytest.raises(store.IntegrityError, match=r"1 file\(s\) not in its MANIFEST.json") as err:
        store.verify(uri)
    assert "patient-7" not in str(err.value)
    # after a replacement the files live under the new version's prefix: still checked
    store.delete(uri + "/inner")
    seaweed.client().remove_object(bucket, f"{key}/images/patient-7.png")
    store.put_artifact(put_folder(tmp_path, "d2", {"train.jsonl": b"{}\n"}), uri, replace=True)
    assert store.verify(uri)["files"] == 1


def test_ls_of_a_missing_bucket_or_prefix_is_an_error(s3_bucket, tmp_path):
    from tests.support.medvqa_fixtures import run_medrl

    store.put_artifact(put_folder(tmp_path, "d", {"a": b"a"}), f"{s3_bucket}/there")
    for uri in (f"s3://medrl-missing-{os.urandom(3).hex()}", f"{s3_bucket}/not-there"):
        done = run_medrl("store", "ls", uri)
        assert done.returncode == 2 and "does not exist" in done.stderr and uri in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert run_medrl("store", "ls", f"{s3_bucket}").returncode == 0


def test_a_file_the_store_keeps_under_another_name_is_never_committed(s3_bucket, tmp_path):
    """SeaweedFS acknowledges the upload of `back\\slash.txt` and keeps it as `back/slash.txt`: a commit that trusted
    the acknowledgements reported success for an artifact every reader then found damaged (its file missing)."""
    src = tmp_path / "dataset"
    fill(src, {"train.jsonl": b"{}\n", "images/scan\\1.png": b"png"})
    uri = f"{s3_bucket}/exp/odd"
    with pytest.raises(store.StoreError, match="1 of 2 uploaded file") as err:
        store.put_artifact(src, uri)
    assert "scan" not in str(err.value)  # file names stay out of messages
    assert not store.is_committed(uri)
    bucket, key = s3.split(uri)
    left = store.backend(uri)._objects(bucket, key + "/", True)
    assert [o.object_name for o in left if not o.object_name.endswith("/")] == []  # its uploads were removed
    # a replacement of a committed artifact is checked the same way, and the committed version stays
    good = tmp_path / "good"
    fill(good, {"train.jsonl": b"{}\n"})
    store.put_artifact(good, uri)
    with pytest.raises(store.StoreError, match="not in the store under their own names"):
        store.put_artifact(src, uri, replace=True)
    assert store.verify(uri) == {"files": 1, "bytes": 3}


def test_a_damaged_copy_in_the_local_cache_is_downloaded_again(s3_bucket, tmp_path, caplog):
    """The store holds the artifact whole; a byte flipped in the local cache's copy (a disk fault, a user's edit) is
    not the artifact's damage: reading it fetched again, where it used to fail telling the user to re-run the stage
    that wrote it."""
    uri = f"{s3_bucket}/model"
    payload = os.urandom(5000)
    with store.commit_dir(uri) as staging:
        fill(staging, {"model.safetensors": payload})
    cached = store.open_dir(uri) / "model.safetensors"
    flipped = bytearray(payload)
    flipped[10] ^= 0x01
    cached.write_bytes(bytes(flipped))
    with caplog.at_level("WARNING", logger="medrl.store"):
        again = store.open_dir(uri)
    assert (again / "model.safetensors").read_bytes() == payload
    assert "local cache" in caplog.text and "model.safetensors" not in caplog.text
    assert store.verified(uri) == again


def test_one_file_of_a_replaced_artifact_is_read_from_its_committed_version(s3_bucket, seaweed, tmp_path):
    uri = f"{s3_bucket}/model"
    for text in (b"first\n", b"second\n"):
        src = tmp_path / text.decode().strip()
        fill(src, {"train_log.jsonl": text, "w.bin": os.urandom(100)})
        store.put_artifact(src, uri, replace=True)
    assert store.member(uri, "train_log.jsonl") == b"second\n"  # under .v-<id>/, where the marker points
    assert store.member(uri, "absent") is None
    bucket, key = s3.split(uri)
    version = store.backend(uri).committed_version(uri)[1]
    seaweed.client().put_object(bucket, f"{key}/{version}train_log.jsonl", io.BytesIO(b"third\n"), 6)
    with pytest.raises(store.IntegrityError):
        store.member(uri, "train_log.jsonl")


def test_a_file_gone_before_its_upload_fails_without_naming_it(s3_bucket, tmp_path, monkeypatch):
    """A file deleted after the folder was listed (another process tidying it): the commit fails as a StoreError
    naming the artifact, and the file's path (a patient's image) stays out of the message."""
    src = tmp_path / "dataset"
    fill(src, {"train.jsonl": b"{}\n", "images/patient-42.png": b"png"})
    listed = s3.local_files(src)
    (src / "images" / "patient-42.png").unlink()
    monkeypatch.setattr(s3, "local_files", lambda root: listed)  # the listing taken before the file went
    uri = f"{s3_bucket}/gone"
    with pytest.raises(store.StoreError) as err:
        store.put_artifact(src, uri)
    assert uri in str(err.value) and "patient-42" not in str(err.value)
    assert not store.is_committed(uri)


def test_a_download_that_cannot_write_names_the_cause_not_the_file(s3_bucket, tmp_path, monkeypatch):
    """A disk that fills while an artifact comes down: the error says why, and the folder it was making (patient
    folders, as MIMIC-CXR's `files/p10/p10000032/...`) stays out of it. A full disk is simulated (stand-in): the
    folder's creation fails as it would, with ENOSPC and the path."""
    uri = f"{s3_bucket}/scans"
    with store.commit_dir(uri) as staging:
        fill(staging, {"files/p10/p10000032/s1/view.jpg": b"jpg"})
    mkdir = Path.mkdir

    def full_disk(self, *args, **kwargs):
        if "p10000032" in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", full_disk)
    with pytest.raises(store.StoreError) as err:
        store.download(uri, tmp_path / "dest")
    assert "No space left on device" in str(err.value) and "p10000032" not in str(err.value)
    assert not (tmp_path / "dest").exists()
