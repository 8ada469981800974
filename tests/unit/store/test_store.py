"""The file:// store: directories are committed whole; readers refuse uncommitted or damaged ones."""

import pytest

from medrl import store


def test_commit_then_read(tmp_path):
    uri = store.normalize(str(tmp_path / "run" / "data"))
    with store.commit_dir(uri) as staging:
        (staging / "a.txt").write_text("hello")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.bin").write_bytes(b"\x00\x01")
        assert not store.is_committed(uri)
    root = store.open_dir(uri, verify=True)
    assert (root / "a.txt").read_text() == "hello"
    assert sorted(store.list_dir(store.join(uri))) == ["COMMITTED", "MANIFEST.json", "a.txt", "sub"]


def test_a_failed_writer_leaves_nothing(tmp_path):
    uri = store.normalize(str(tmp_path / "model"))
    with pytest.raises(RuntimeError), store.commit_dir(uri) as staging:
        (staging / "weights").write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert not store.is_committed(uri)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(store.NotCommittedError, match="does not exist: check the path"):
        store.open_dir(uri)
    (tmp_path / "model").mkdir()  # a folder without the marker: a writer that did not finish
    with pytest.raises(store.NotCommittedError, match="did not finish"):
        store.open_dir(uri)


def test_recommit_replaces_the_old_version(tmp_path):
    uri = store.normalize(str(tmp_path / "report"))
    for text in ("v1", "v2"):
        with store.commit_dir(uri) as staging:
            (staging / "report.md").write_text(text)
    assert (store.open_dir(uri) / "report.md").read_text() == "v2"


def test_a_flipped_byte_fails_verification(tmp_path):
    uri = store.normalize(str(tmp_path / "ckpt"))
    with store.commit_dir(uri) as staging:
        (staging / "w.bin").write_bytes(bytes(range(256)))
    path = store.open_dir(uri) / "w.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(store.IntegrityError, match="does not match its sha256") as err:
        store.open_dir(uri, verify=True)
    assert "w.bin" not in str(err.value) and err.value.file == "w.bin"  # file names may carry patient data


def test_single_objects_and_uris(tmp_path):
    uri = store.normalize(str(tmp_path / "x" / "metrics.json"))
    assert uri.startswith("file:///")
    store.write_text(uri, "{}")
    assert store.read_text(uri) == "{}"
    with pytest.raises(store.StoreError, match="does not exist"):
        store.read_text(uri + ".missing")
    with pytest.raises(store.StoreError, match="not supported"):
        store.read_text("ftp://host/file")


def test_commit_from_download_ls_and_delete(tmp_path):
    local = tmp_path / "ckpt"
    (local / "sub").mkdir(parents=True)
    (local / "model.bin").write_bytes(b"w" * 100)
    (local / "sub" / "state.json").write_text("{}")
    uri = store.normalize(str(tmp_path / "store" / "ckpts" / "step-1"))
    store.commit_from(local, uri)
    assert (local / "model.bin").is_file(), "commit_from reads the local folder, it does not move it"
    assert store.verify(uri) == {"files": 2, "bytes": 102}
    copy = store.download(uri, tmp_path / "copy")
    assert (copy / "sub" / "state.json").read_text() == "{}" and (copy / "COMMITTED").is_file()

    parent = store.normalize(str(tmp_path / "store" / "ckpts"))
    store.write_text(store.join(parent, "note.txt"), "x")
    entries = {e["name"]: e for e in store.ls(parent)}
    assert entries["step-1"] == {"name": "step-1", "kind": "committed", "files": 2, "bytes": 102}
    assert entries["note.txt"]["kind"] == "object"

    store.delete(uri)
    assert not store.exists(uri) and not store.is_committed(uri)


def test_put_artifact_refuses_a_committed_target_without_replace(tmp_path):
    src = tmp_path / "weights"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"w" * 10)
    uri = store.normalize(str(tmp_path / "store" / "model"))
    assert store.put_artifact(src, uri) == {"files": 1, "bytes": 10}
    (src / "model.safetensors").write_bytes(b"v" * 12)
    with pytest.raises(store.StoreError, match=r"already committed.*--replace"):
        store.put_artifact(src, uri)
    assert store.put_artifact(src, uri, replace=True) == {"files": 1, "bytes": 12}
    with pytest.raises(store.StoreError, match="not a folder"):
        store.put_artifact(src / "model.safetensors", uri, replace=True)


def test_ls_lists_a_damaged_artifact_as_damaged(tmp_path):
    parent = store.normalize(str(tmp_path / "models"))
    for name in ("good", "bad"):
        with store.commit_dir(store.join(parent, name)) as staging:
            (staging / "w.bin").write_bytes(b"w")
    (tmp_path / "models" / "bad" / "MANIFEST.json").write_text("{not json")
    entries = {e["name"]: e for e in store.ls(parent)}
    assert entries["good"]["kind"] == "committed"
    assert entries["bad"]["kind"] == "damaged" and "damaged" in entries["bad"]["error"]


@pytest.mark.parametrize("uri", ["./runs", "/abs/runs", "file:///abs/runs", "s3://medrl/runs", "s3://medrl"])
def test_check_uri_accepts_paths_files_and_s3(uri):
    store.check_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("ftp://host/runs", "scheme 'ftp' is not supported"),
        ("s3:///runs", "s3://bucket/prefix"),
        ("s3://Bad_Bucket/runs", "bucket names"),
        ("", "empty"),
    ],
)
def test_check_uri_refuses_what_no_backend_serves(uri, message):
    with pytest.raises(store.StoreError, match=message) as err:
        store.check_uri(uri)
    assert "file:///path or s3://bucket/prefix" in str(err.value)
