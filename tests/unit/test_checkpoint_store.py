"""Checkpoints in the (file://) store: the newest K committed ones are kept, torn ones are never restored."""

import json

import pytest

from medrl.infra import checkpoint_store, store


def save(tmp_path, step: int):
    local = tmp_path / f"local-{step}"
    local.mkdir()
    (local / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (local / "model.safetensors").write_bytes(bytes([step]) * 64)
    return local


def torn(uri: str, step: int) -> None:
    """What a crash mid-upload leaves: files without a COMMITTED marker."""
    store.write_text(store.join(uri, f"step-{step}", "model.safetensors"), "half")


def test_keeps_the_newest_k_and_removes_torn_leftovers(tmp_path):
    uri = store.normalize(str(tmp_path / "run" / "checkpoints"))
    checkpoint_store.commit_checkpoint(save(tmp_path, 2), uri, 2, keep=2)
    torn(uri, 3)
    checkpoint_store.commit_checkpoint(save(tmp_path, 4), uri, 4, keep=2)
    torn(uri, 7)  # newer than anything committed: maybe still on its way up, so it stays
    checkpoint_store.commit_checkpoint(save(tmp_path, 6), uri, 6, keep=2)
    assert [n for n, _ in checkpoint_store.steps(uri)] == [4, 6, 7]
    assert checkpoint_store.latest_committed(uri) == (6, store.join(uri, "step-6"))


def test_restore_takes_the_newest_committed_checkpoint(tmp_path, caplog):
    uri = store.normalize(str(tmp_path / "run" / "checkpoints"))
    assert checkpoint_store.restore_latest(uri, tmp_path / "work") is None
    checkpoint_store.commit_checkpoint(save(tmp_path, 10), uri, 10, keep=3)
    checkpoint_store.commit_checkpoint(save(tmp_path, 9), uri, 9, keep=3)
    torn(uri, 11)
    with caplog.at_level("WARNING"):
        path = checkpoint_store.restore_latest(uri, tmp_path / "work" / "checkpoints")
    assert path == tmp_path / "work" / "checkpoints" / "checkpoint-10"  # numeric order: 10 after 9
    assert json.loads((path / "trainer_state.json").read_text()) == {"global_step": 10}
    assert any("step-11" in r.getMessage() and "torn" in r.getMessage() for r in caplog.records)


def test_a_local_checkpoint_is_committed_by_the_store_in_place(tmp_path):
    path = save(tmp_path, 5).rename(tmp_path / "checkpoint-5")
    checkpoint_store.commit_local(path)
    assert store.verify(checkpoint_store.local_uri(path)) == {"files": 2, "bytes": 64 + len('{"global_step": 5}')}
    assert sorted(p.name for p in path.iterdir()) == [
        "COMMITTED",
        "MANIFEST.json",
        "model.safetensors",
        "trainer_state.json",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging or trash left over
    assert checkpoint_store.latest_checkpoint(tmp_path, verify=True) == path


def test_the_target_and_the_arm_reach_the_callbacks_as_arguments(tmp_path):
    from medrl.train.common import training_callbacks

    target = checkpoint_store.Target("file:///x/checkpoints", keep=3)
    callbacks = training_callbacks("arm-a", tmp_path, keep=2, upload=target)
    uploads = [c for c in callbacks if isinstance(c, checkpoint_store.CheckpointUpload)]
    assert [u.target for u in uploads] == [target]
    assert [c.keep for c in callbacks if isinstance(c, checkpoint_store.CheckpointCommit)] == [2]
    assert [c.recorder.arm for c in callbacks if hasattr(c, "recorder")] == ["arm-a"]
    alone = training_callbacks("arm-b", tmp_path, keep=2)
    assert not any(isinstance(c, checkpoint_store.CheckpointUpload) for c in alone)
    with pytest.raises(ValueError, match="save_total_limit"):
        checkpoint_store.Target("file:///x", keep=0)
