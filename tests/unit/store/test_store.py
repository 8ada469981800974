"""The file:// store: directories are committed whole; readers refuse uncommitted or damaged ones."""

import pytest

from medrl import store
from tests.support.cli import medrl_here


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


# ------------------------------------------------------------------------- nothing lost, nothing silent (issue 30)


def committed(tmp_path, name: str, files: dict[str, bytes]) -> str:
    uri = store.normalize(str(tmp_path / name))
    with store.commit_dir(uri) as staging:
        for rel, data in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
    return uri


def test_store_get_onto_a_committed_artifact_is_refused_without_replace(tmp_path):
    src = committed(tmp_path, "store/new-model", {"w.bin": b"new"})
    committed(tmp_path, "trained-model", {"w.bin": b"GPU-hours"})
    dest = tmp_path / "trained-model"
    done = medrl_here("store", "get", src, str(dest))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "committed artifact" in done.stderr and "--replace" in done.stderr
    assert (dest / "w.bin").read_bytes() == b"GPU-hours"  # nothing lost
    done = medrl_here("store", "get", "--replace", src, str(dest))
    assert done.returncode == 0, done.stderr
    assert (dest / "w.bin").read_bytes() == b"new"


def test_replace_refuses_to_delete_a_nested_committed_artifact(tmp_path):
    """`put a x`, `put c x/inner`, `put c x --replace`: x/inner would go with x's old version; refused, naming it."""
    a, c = tmp_path / "a", tmp_path / "c"
    for folder, text in ((a, b"a"), (c, b"c")):
        folder.mkdir()
        (folder / "f.txt").write_bytes(text)
    x = store.normalize(str(tmp_path / "store" / "x"))
    store.put_artifact(a, x)
    store.put_artifact(c, store.join(x, "inner"))
    with pytest.raises(store.OutputError, match=r"holds another committed artifact, .*x/inner.*would delete it"):
        store.put_artifact(c, x, replace=True)
    assert (store.open_dir(store.join(x, "inner"), verify=True) / "f.txt").read_bytes() == b"c"
    assert (store.open_dir(x, verify=True) / "f.txt").read_bytes() == b"a"  # x as it was, and still whole
    # the same through a download onto it
    with pytest.raises(store.OutputError, match="holds another committed artifact"):
        store.download(store.join(x, "inner"), tmp_path / "store" / "x")
    assert store.is_committed(store.join(x, "inner"))


def test_a_missing_manifest_is_listed_and_verified_as_damaged_not_a_crash(tmp_path):
    parent = tmp_path / "models"
    for name in ("good", "broken", "other"):
        committed(tmp_path, f"models/{name}", {"w.bin": name.encode()})
    (parent / "broken" / "MANIFEST.json").unlink()
    entries = {e["name"]: e for e in store.ls(store.normalize(str(parent)))}
    assert entries["good"]["kind"] == entries["other"]["kind"] == "committed"
    assert entries["broken"]["kind"] == "damaged" and "MANIFEST.json is missing" in entries["broken"]["error"]
    ls = medrl_here("store", "ls", str(parent))
    assert ls.returncode == 0 and "Traceback" not in ls.stderr, ls.stderr
    assert "good/" in ls.stdout and "other/" in ls.stdout and "DAMAGED" in ls.stdout
    verify = medrl_here("store", "verify", str(parent / "broken"))
    assert verify.returncode == 1 and "Traceback" not in verify.stderr and "DAMAGED" in verify.stderr, verify.stderr


def test_verify_fails_a_committed_folder_with_a_file_added_after_the_commit(tmp_path):
    uri = committed(tmp_path, "data", {"train.jsonl": b"{}\n", "images/a.png": b"png"})
    assert store.verify(uri) == {"files": 2, "bytes": 6}
    (tmp_path / "data" / "images" / "patient-99.png").write_bytes(b"slipped in")
    with pytest.raises(store.IntegrityError, match=r"1 file\(s\) not in its MANIFEST.json") as err:
        store.verify(uri)
    assert "patient-99" not in str(err.value) and err.value.file == "images/patient-99.png"


def test_ls_of_a_missing_path_is_an_error_not_an_empty_listing(tmp_path):
    done = medrl_here("store", "ls", str(tmp_path / "no-such-folder"))
    assert done.returncode == 2 and "does not exist" in done.stderr and "no-such-folder" in done.stderr, done.stderr
    (tmp_path / "empty").mkdir()
    assert medrl_here("store", "ls", str(tmp_path / "empty")).returncode == 0  # an empty folder is just empty


def test_put_refuses_symlinks_that_leave_the_folder(tmp_path):
    src = tmp_path / "weights"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("outside")
    (src / "inside-link.json").symlink_to(src / "config.json")  # within the folder: followed
    uri = store.normalize(str(tmp_path / "store" / "w"))
    assert store.put_artifact(src, uri)["files"] == 2
    (src / "leak.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(store.StoreError, match=r"1 symbolic link\(s\) in it lead out of the folder.*cp -rL"):
        store.put_artifact(src, store.normalize(str(tmp_path / "store" / "w2")))
    assert not (tmp_path / "store" / "w2").exists()
