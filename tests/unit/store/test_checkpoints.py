"""Checkpoints in the (file://) store: the newest K committed ones are kept, torn ones are never restored."""

import json
from types import SimpleNamespace

import pytest

from medrl import store
from medrl.store import checkpoints
from medrl.study import arm as arm_steps
from medrl.train import callbacks


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
    checkpoints.commit_checkpoint(save(tmp_path, 2), uri, 2, keep=2)
    torn(uri, 3)
    checkpoints.commit_checkpoint(save(tmp_path, 4), uri, 4, keep=2)
    torn(uri, 7)  # newer than anything committed: maybe still on its way up, so it stays
    checkpoints.commit_checkpoint(save(tmp_path, 6), uri, 6, keep=2)
    assert [n for n, _ in checkpoints.steps(uri)] == [4, 6, 7]
    assert checkpoints.latest_committed(uri) == (6, store.join(uri, "step-6"))


def test_restore_takes_the_newest_committed_checkpoint(tmp_path, caplog):
    uri = store.normalize(str(tmp_path / "run" / "checkpoints"))
    assert checkpoints.restore_latest(uri, tmp_path / "work") is None
    checkpoints.commit_checkpoint(save(tmp_path, 10), uri, 10, keep=3)
    checkpoints.commit_checkpoint(save(tmp_path, 9), uri, 9, keep=3)
    torn(uri, 11)
    with caplog.at_level("WARNING"):
        path = checkpoints.restore_latest(uri, tmp_path / "work" / "checkpoints")
    assert path == tmp_path / "work" / "checkpoints" / "checkpoint-10"  # numeric order: 10 after 9
    assert json.loads((path / "trainer_state.json").read_text()) == {"global_step": 10}
    assert any("step-11" in r.getMessage() and "torn" in r.getMessage() for r in caplog.records)


def test_a_local_checkpoint_is_committed_by_the_store_in_place(tmp_path):
    path = save(tmp_path, 5).rename(tmp_path / "checkpoint-5")
    checkpoints.commit_local(path)
    assert store.verify(checkpoints.local_uri(path)) == {"files": 2, "bytes": 64 + len('{"global_step": 5}')}
    assert sorted(p.name for p in path.iterdir()) == [
        "COMMITTED",
        "MANIFEST.json",
        "model.safetensors",
        "trainer_state.json",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging or trash left over
    assert checkpoints.latest_checkpoint(tmp_path, verify=True) == path


def test_the_target_and_the_arm_reach_the_callbacks_as_arguments(tmp_path):
    from medrl.train.common import training_callbacks

    target = checkpoints.Target("file:///x/checkpoints", keep=3)
    made = training_callbacks("arm-a", tmp_path, keep=2, upload=target)
    uploads = [c for c in made if isinstance(c, callbacks.CheckpointUpload)]
    assert [u.target for u in uploads] == [target]
    assert [c.keep for c in made if isinstance(c, callbacks.CheckpointCommit)] == [2]
    assert [c.recorder.arm for c in made if hasattr(c, "recorder")] == ["arm-a"]
    alone = training_callbacks("arm-b", tmp_path, keep=2)
    assert not any(isinstance(c, callbacks.CheckpointUpload) for c in alone)
    with pytest.raises(ValueError, match="save_total_limit"):
        checkpoints.Target("file:///x", keep=0)


# ------------------------------------------------------------------------------------- several nodes


def node_save(tmp_path, step: int, node: int):
    """What one node's ranks write: node 0 the weights and trainer state, every node its ranks' shards."""
    local = tmp_path / f"local-{step}-{node}"
    local.mkdir()
    if node == 0:
        (local / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        (local / "latest").write_text(f"global_step{step}")
    shard = local / f"global_step{step}"
    shard.mkdir()
    for rank in (2 * node, 2 * node + 1):
        (shard / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(bytes([step, rank]) * 32)
        (local / f"rng_state_{rank}.pth").write_bytes(bytes([rank]) * 8)
    return local


def test_node_from_torchrun_variables():
    env = {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "3", "GROUP_RANK": "1"}
    assert checkpoints.Node.from_env(env) == checkpoints.Node(1, 2)
    assert checkpoints.Node.from_env({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "2"}).index == 1
    assert checkpoints.Node.from_env({}) == checkpoints.Node(0, 1)


def test_a_multi_node_checkpoint_exists_once_every_node_part_of_one_attempt_is_committed(tmp_path, caplog):
    uri = store.normalize(str(tmp_path / "run" / "checkpoints"))
    part = checkpoints.Part
    for node in (0, 1):
        checkpoints.commit_checkpoint(node_save(tmp_path, 2, node), uri, 2, keep=3, part=part(node, 2, "aa"))
    checkpoints.commit_checkpoint(node_save(tmp_path, 4, 0), uri, 4, keep=3, part=part(0, 2, "aa"))
    # Node 1 of another attempt reached step 4 too: its part never completes attempt aa's.
    checkpoints.commit_checkpoint(node_save(tmp_path, 4, 1), uri, 4, keep=3, part=part(1, 2, "bb"))
    assert checkpoints.latest_committed(uri, nodes=2) == (2, store.join(uri, "step-2"))
    assert checkpoints.latest_committed(uri, nodes=1) is None  # not a one-node checkpoint
    with caplog.at_level("WARNING"):
        path = checkpoints.restore_latest(uri, tmp_path / "node1" / "checkpoints", nodes=2)
    assert any("step-4" in r.getMessage() and "part" in r.getMessage() for r in caplog.records)
    assert path == tmp_path / "node1" / "checkpoints" / "checkpoint-2"
    # Merged: every rank's shard and RNG state and node 0's trainer state, in one verified checkpoint.
    names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert [n for n in names if "zero_pp_rank" in n] == [
        f"global_step2/zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(4)
    ]
    assert {"trainer_state.json", "latest", "rng_state_3.pth", checkpoints.NODES_FILE} <= set(names)
    assert checkpoints.is_complete(path, verify=True)


def test_restore_on_each_node_drops_its_own_saves_and_resumes_from_the_step_complete_in_the_store(tmp_path):
    uri = store.normalize(str(tmp_path / "run" / "checkpoints"))
    for node in (0, 1):
        checkpoints.commit_checkpoint(
            node_save(tmp_path, 2, node), uri, 2, keep=3, part=checkpoints.Part(node, 2, "aa")
        )
    work = tmp_path / "work"
    (work / "checkpoints").mkdir(parents=True)
    own = node_save(tmp_path, 4, 1).rename(work / "checkpoints" / "checkpoint-4")
    checkpoints.commit_local(own)  # node 1's own save of step 4: its ranks' files only
    node1 = checkpoints.Node(1, 2)
    restored = checkpoints.restore_once(uri, work, node=node1)
    assert restored == work / "checkpoints" / "checkpoint-2"
    assert checkpoints.checkpoints(work / "checkpoints") == [restored]
    assert checkpoints.latest_checkpoint(work / "checkpoints") == restored
    assert checkpoints.restore_once(uri, work, node=node1) == restored  # the next rank of the node finds it


def test_a_damaged_store_checkpoint_is_skipped_for_the_next_older_one(tmp_path, caplog):
    uri = store.normalize(str(tmp_path / "run" / "checkpoints"))
    checkpoints.commit_checkpoint(save(tmp_path, 3), uri, 3, keep=3)
    checkpoints.commit_checkpoint(save(tmp_path, 6), uri, 6, keep=3)
    weights = store.backend(uri).path(store.join(uri, "step-6")) / "model.safetensors"
    weights.write_bytes(b"\xff" * 64)  # flipped bytes, same size: only hashing notices
    with caplog.at_level("WARNING"):
        path = checkpoints.restore_latest(uri, tmp_path / "work" / "checkpoints")
    assert path == tmp_path / "work" / "checkpoints" / "checkpoint-3"
    assert any("step-6" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    # The same for each node's part of a multi-node checkpoint, and for a local checkpoint.
    local = tmp_path / "work" / "checkpoints"
    newer = save(tmp_path, 9).rename(local / "checkpoint-9")
    checkpoints.commit_local(newer)
    (newer / "model.safetensors").write_bytes(b"\x00" * 64)
    assert checkpoints.latest_checkpoint(local) == path


# ------------------------------------------------------------------------------------- volume and uploads


def test_once_the_model_is_committed_only_the_newest_n_checkpoints_stay(tmp_path):
    uri = store.normalize(str(tmp_path / "run" / "checkpoints"))
    for step in (2, 4, 6):
        checkpoints.commit_checkpoint(save(tmp_path, step), uri, step, keep=3)
    torn(uri, 8)
    assert checkpoints.prune_after_commit(uri, keep=1) == [store.join(uri, f"step-{n}") for n in (2, 4, 8)]
    assert [n for n, _ in checkpoints.steps(uri)] == [6]
    checkpoints.prune_after_commit(uri, keep=0)
    assert checkpoints.steps(uri) == []


def test_the_study_setting_for_checkpoints_kept_after_training_is_checked(monkeypatch):
    from medrl.config import ConfigError

    assert arm_steps.keep_checkpoints_after() == 0
    monkeypatch.setenv(arm_steps.KEEP_AFTER_ENV, "2")
    assert arm_steps.keep_checkpoints_after() == 2
    monkeypatch.setenv(arm_steps.KEEP_AFTER_ENV, "-1")
    with pytest.raises(ConfigError, match="MEDRL_KEEP_CHECKPOINTS_AFTER"):
        arm_steps.keep_checkpoints_after()


def test_the_upload_snapshot_links_the_files_instead_of_copying_them(tmp_path):
    path = save(tmp_path, 5).rename(tmp_path / "checkpoint-5")
    checkpoints.commit_local(path)
    frozen = callbacks.snapshot(path, tmp_path / "up" / "step-5")
    assert sorted(p.name for p in frozen.iterdir()) == ["model.safetensors", "trainer_state.json"]
    assert (frozen / "model.safetensors").stat().st_ino == (path / "model.safetensors").stat().st_ino
    store.delete(checkpoints.local_uri(path))  # rotation removes the checkpoint: the snapshot stays whole
    assert (frozen / "model.safetensors").read_bytes() == bytes([5]) * 64


def trainer_save(callback, tmp_path, step: int):
    """The trainer's side of a save as the callbacks see it: a committed checkpoint-N folder, then on_save."""
    from transformers import TrainerState

    args = SimpleNamespace(output_dir=str(tmp_path / "checkpoints"), world_size=1)
    folder = save(tmp_path, step).rename(tmp_path / "checkpoints" / f"checkpoint-{step}")
    checkpoints.commit_local(folder)
    state = TrainerState(global_step=step)
    callback.on_save(args, state, None)
    return args, state


def test_a_failed_upload_stops_training_at_the_next_save_and_at_the_end(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    broken = checkpoints.Target(store.normalize(str(blocker / "checkpoints")), keep=2)
    upload = callbacks.CheckpointUpload(broken, tmp_path / "up", node=checkpoints.Node())
    trainer_save(upload, tmp_path, 1)  # the upload fails in the background; training goes on
    upload.wait()
    assert upload.failed == [1]
    with pytest.raises(callbacks.CheckpointError, match="step-1 was not uploaded to file://"):
        trainer_save(upload, tmp_path, 2)
    # A failure of the last upload surfaces when training ends.
    good = checkpoints.Target(store.normalize(str(tmp_path / "store")), keep=2)
    upload = callbacks.CheckpointUpload(good, tmp_path / "up", node=checkpoints.Node())
    args, state = trainer_save(upload, tmp_path, 3)
    upload.wait()
    assert upload.uploaded == [3] and store.is_committed(store.join(good.uri, "step-3"))
    upload.target = broken
    args, state = trainer_save(upload, tmp_path, 4)
    with pytest.raises(callbacks.CheckpointError, match="step-4"):
        upload.on_train_end(args, state, None)
