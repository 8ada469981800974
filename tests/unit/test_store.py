"""The file:// store: directories are committed whole; readers refuse uncommitted or damaged ones."""

import pytest

from medrl.infra import store


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
