"""Output paths medrl did not write are never deleted or moved: a folder that is not a committed medrl artifact,
or a file, is refused with an error naming the path; an empty folder is used; a committed artifact is replaced
atomically. Real files and, for the CLI, a real `medrl prep` process."""

import os
import subprocess
import sys

import pytest

from medrl import store


def commit(path, text="v1"):
    with store.commit_dir(store.normalize(str(path))) as staging:
        (staging / "weights.bin").write_text(text)


def test_a_folder_medrl_did_not_write_is_refused_and_kept(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("notes")
    with pytest.raises(store.OutputError, match="not a medrl artifact") as err:
        commit(out)
    assert str(out) in str(err.value) and "empty folder" in str(err.value)
    assert (out / "thesis.txt").read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"], "no staging or trash folder is left behind"


def test_a_file_is_refused_and_kept(tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("notes")
    with pytest.raises(store.OutputError, match="is a file") as err:
        commit(out)
    assert str(out) in str(err.value)
    assert out.read_text() == "notes" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_download_into_a_foreign_folder_is_refused(tmp_path):
    uri = store.normalize(str(tmp_path / "store" / "model"))
    commit(tmp_path / "store" / "model")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("x")
    with pytest.raises(store.OutputError, match="not a medrl artifact"):
        store.download(uri, dest)
    assert (dest / "keep.txt").read_text() == "x" and not (dest / "weights.bin").exists()


def test_an_empty_folder_is_used_and_an_artifact_is_replaced(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    commit(out, "v1")
    assert (out / "weights.bin").read_text() == "v1" and store.is_committed(store.normalize(str(out)))
    commit(out, "v2")
    assert (out / "weights.bin").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_prep_into_a_folder_of_notes_refuses_and_deletes_nothing(tmp_path):
    """The issue's reproduction: `cd p && medrl prep --out .` used to move thesis.txt to a trash folder."""
    p = tmp_path / "p"
    p.mkdir()
    (p / "thesis.txt").write_text("notes")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    args = [sys.executable, "-m", "medrl", "prep", "--source", "synthetic", "--out", ".", "--train-size", "4"]
    done = subprocess.run([*args, "--test-size", "2"], cwd=p, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert str(p) in done.stderr and "not a medrl artifact" in done.stderr and "Traceback" not in done.stderr
    assert sorted(x.name for x in p.iterdir()) == ["thesis.txt"] and (p / "thesis.txt").read_text() == "notes"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p"]


def test_a_torn_folder_in_medrls_work_folder_is_replaced_when_scratch(tmp_path):
    uri = store.normalize(str(tmp_path / "store" / "step-3"))
    commit(tmp_path / "store" / "step-3", "three")
    torn = tmp_path / "work" / "checkpoint-3"  # a save a crash cut short: no COMMITTED marker
    torn.mkdir(parents=True)
    (torn / "weights.bin").write_text("half")
    with pytest.raises(store.OutputError):
        store.download(uri, torn)
    assert store.download(uri, torn, scratch=True) == torn and (torn / "weights.bin").read_text() == "three"
