"""Input artifacts are checked against their MANIFEST before use (local folders and store URIs), once: a re-run
finds the (size, mtime, ctime) of every file unchanged and does not hash again. Real files."""

import logging
import os
import shutil

import pytest

from medrl import store


def model(path, weights=b"w" * 4096):
    with store.commit_dir(store.normalize(str(path))) as staging:
        (staging / "model.safetensors").write_bytes(weights)
        (staging / "config.json").write_text("{}")
    return path


def flip(path, offset=100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only ctime tells


@pytest.fixture
def hashes(monkeypatch):
    """Counts the files hashed (a spy on the real hash function, which still runs)."""
    seen = []
    real = store.sha256_file

    def counting(path, *args, **kwargs):
        seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(store, "sha256_file", counting)
    return seen


def test_a_local_artifact_is_verified_once_then_trusted_until_a_file_changes(tmp_path, monkeypatch, hashes):
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model"
    shutil.copytree(model(tmp_path / "made"), path)  # a model brought here: new files, never checked
    hashes.clear()
    assert store.verified(path) == path and len(hashes) == 2
    assert store.verified(str(path)) == path and len(hashes) == 2, "a re-run must not hash again"
    flip(path / "model.safetensors")
    with pytest.raises(store.IntegrityError, match="does not match its sha256") as err:
        store.verified(path)
    assert str(path) in str(err.value) and "model.safetensors" not in str(err.value)


def test_a_store_uri_is_verified_and_a_plain_folder_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    path = model(tmp_path / "store" / "data")
    assert store.verified(store.normalize(str(path))) == path
    flip(path / "config.json", 0)
    with pytest.raises(store.IntegrityError):
        store.verified(store.normalize(str(path)))
    plain = tmp_path / "hub-snapshot"  # no MANIFEST.json: not a medrl artifact, nothing to check against
    plain.mkdir()
    assert store.verified(plain) == plain and store.verified("Qwen/Qwen2-VL-2B-Instruct").name == "Qwen2-VL-2B-Instruct"
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "MANIFEST.json").write_text("{}")
    with pytest.raises(store.NotCommittedError):
        store.verified(torn)


def test_the_newest_checkpoint_that_passes_is_taken_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    ckpts = [model(tmp_path / f"checkpoint-{step}", bytes([step]) * 512) for step in (1, 2, 3)]
    flip(ckpts[2] / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="medrl.store"):
        assert store.newest_verified(reversed(ckpts)) == ckpts[1]
    assert [r for r in caplog.records if "checkpoint-3" in r.getMessage() and "damaged" in r.getMessage()]
    flip(ckpts[1] / "model.safetensors")
    flip(ckpts[0] / "config.json", 0)
    assert store.newest_verified(reversed(ckpts)) is None


def test_opening_a_tampered_local_artifact_fails(tmp_path, monkeypatch, hashes):
    """What `train --data ./data` does (store.open_dir of the normalized path): a tampered train.jsonl is refused."""
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    path = model(tmp_path / "data")
    uri = store.normalize(str(path))
    hashes.clear()
    assert store.open_dir(uri) == path and store.open_dir(uri) == path
    assert hashes == [], "the commit recorded what it hashed: opening it again hashes nothing"
    (path / "config.json").write_text("[]")
    with pytest.raises(store.IntegrityError, match="damaged"):
        store.open_dir(uri)
