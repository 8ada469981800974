"""Training checkpoints, committed by the store's own commit: the trainer's local `checkpoint-N` folders, and their
copies in the store under `<arm>/checkpoints/step-N/` (one part per node when a run spans several), the newest K
kept while training and none (or MEDRL_KEEP_CHECKPOINTS_AFTER) once the arm's model is committed.

A folder without the COMMITTED marker (a save or an upload that a crash cut short) is never resumed from and is
removed once a newer checkpoint is committed; one that fails verification is passed over for the next older one.
Resume takes the newest committed local checkpoint; in a study, the newest checkpoint complete in the store is first
brought to every node (`restore_once`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from medrl import store

log = logging.getLogger("medrl.checkpoints")

LOCAL_DIR = re.compile(r"checkpoint-(\d+)")  # the trainer's name, which its resume looks for
STEP_DIR = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class Target:
    """Where a training run's checkpoints go in the store: `uri` holds the step-N folders; `keep` of them are kept."""

    uri: str
    keep: int

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError(f"train.save_total_limit={self.keep}: keep at least one checkpoint")


# ------------------------------------------------------------------------------------- local checkpoints


def step_of(path: Path) -> int | None:
    """The step of a `checkpoint-N` folder, None for any other name.

    >>> step_of(Path("run/checkpoint-200")), step_of(Path("run/other"))
    (200, None)
    """
    m = LOCAL_DIR.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def local_uri(path: Path) -> str:
    return store.normalize(str(path))


def commit_local(path: Path) -> None:
    """Commit the checkpoint folder the trainer saved at `path` in place, through the store's commit: its files move
    (renames on one filesystem, no copy of the weights) into the store's staging folder, which then takes its
    place with MANIFEST.json and the COMMITTED marker."""
    path = Path(path)
    # The store never replaces a folder it did not commit, so the trainer's folder steps aside first (a rename in
    # medrl's own work folder), and its files move into the commit's staging folder.
    saved = path.with_name(f".saved-{path.name}-{uuid.uuid4().hex[:8]}")
    os.replace(path, saved)
    with store.commit_dir(local_uri(path)) as staging:
        for item in saved.iterdir():
            os.replace(item, staging / item.name)
    saved.rmdir()


def is_complete(path: Path, verify: bool = False) -> bool:
    """Committed: the marker holds the manifest's sha256 and every listed file is there with its size; with
    `verify`, every file's sha256 is checked too (the store's verify), except files unchanged since they last
    matched (size, mtime, ctime and inode as recorded then)."""
    path = Path(path)
    try:
        if verify:
            store.verify_dir(path, local_uri(path), cache=True)
            return True
        data = (path / store.MANIFEST).read_bytes()
        if (path / store.COMMITTED).read_text().strip() != store.marker_text(data).strip():
            return False
        files = json.loads(data)["files"]
        return all((path / rel).is_file() and (path / rel).stat().st_size == m["size"] for rel, m in files.items())
    except (OSError, ValueError, KeyError):
        return False
    except store.StoreError as err:  # a file that does not match its sha256; the message names no file
        log.warning("checkpoint %s is damaged: %s", path.name, err)
        return False


def checkpoints(directory: Path) -> list[Path]:
    """Every `checkpoint-N` folder under `directory`, oldest step first (complete or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def latest_checkpoint(directory: Path, verify: bool = True) -> Path | None:
    """The committed checkpoint with the highest step under `directory` that passes verification (a damaged one
    is named in a warning and passed over), or None."""
    for path in reversed(checkpoints(directory)):
        if is_complete(path, verify=verify):
            return path
    return None


# ------------------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class Node:
    """This process's node in the run: its index and how many nodes there are, from torchrun's variables (GROUP_RANK,
    WORLD_SIZE, LOCAL_WORLD_SIZE); one node of one process when they are unset."""

    index: int = 0
    count: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Node:
        env = os.environ if env is None else env
        world = int(env.get("WORLD_SIZE") or 1)
        local = max(int(env.get("LOCAL_WORLD_SIZE") or world), 1)
        index = int(env.get("GROUP_RANK") or int(env.get("RANK") or 0) // local)
        return cls(index, max(world // local, 1))


@dataclass(frozen=True)
class Part:
    """One node's share of a multi-node checkpoint: the files its ranks saved (ZeRO optimizer shards, RNG states;
    node 0 also the weights, trainer state and DeepSpeed's `latest`). `token` is the training attempt's, the same on
    every node, so that parts of two attempts that reached the same step are never mixed."""

    node: int
    nodes: int
    token: str

    @property
    def name(self) -> str:
        return f"node-{self.node}-of-{self.nodes}-{self.token}"


PART_DIR = re.compile(r"node-(\d+)-of-(\d+)-([0-9a-f]+)")
NODES_FILE = "medrl-nodes.json"  # in a checkpoint merged from every node's part: the node count it is whole for


# ------------------------------------------------------------------------------------- in the store
#
# One node: `<uri>/step-N/` is the checkpoint, one committed artifact. Several nodes: `<uri>/step-N/node-K-of-M-T/`
# is node K's part, each committed on its own by that node's local rank 0; the checkpoint exists for readers once all
# M parts of one attempt T are committed. No reader ever takes a step with a part missing or torn, and no node waits
# for another to save.


def steps(uri: str) -> list[tuple[int, str]]:
    """(step, URI) of every step-N folder under `uri`, complete or not, oldest first."""
    found = []
    for name in store.list_dir(uri):
        match = STEP_DIR.fullmatch(name)
        if match:
            found.append((int(match.group(1)), store.join(uri, name)))
    return sorted(found)


def complete_parts(step_uri: str, nodes: int = 1) -> list[list[str]]:
    """Every complete set of a step folder for `nodes` nodes, each a list of artifact URIs in node order: for one
    node the step folder itself when committed; for several, the parts of one attempt, all committed."""
    if nodes == 1:
        return [[step_uri]] if store.is_committed(step_uri) else []
    attempts: dict[str, dict[int, str]] = {}
    for name in store.list_dir(step_uri):
        match = PART_DIR.fullmatch(name)
        if match and int(match.group(2)) == nodes:
            uri = store.join(step_uri, name)
            if store.is_committed(uri):
                attempts.setdefault(match.group(3), {})[int(match.group(1))] = uri
    return [[parts[i] for i in range(nodes)] for parts in attempts.values() if set(parts) == set(range(nodes))]


def complete_checkpoints(uri: str, nodes: int = 1) -> Iterator[tuple[int, list[str]]]:
    """(step, artifact URIs) of each complete checkpoint under `uri`, newest first; an incomplete one is named in a
    warning and passed over."""
    for n, u in reversed(steps(uri)):
        sets = complete_parts(u, nodes)
        if not sets:
            log.warning(
                "checkpoint step-%d under %s is not committed for %d node(s) (a torn upload, or a node's part "
                "missing); looking further back",
                n,
                uri,
                nodes,
            )
        for parts in sets:
            yield n, parts


def commit_checkpoint(local: Path, uri: str, step: int, keep: int, part: Part | None = None) -> str:
    """Commit the local checkpoint folder as `uri/step-N` (with `part`, as that node's part of it), then prune;
    returns the URI committed. Node 0 alone prunes, so two nodes never delete beside each other."""
    dest = store.join(uri, f"step-{step}")
    if part is not None:
        dest = store.join(dest, part.name)
    store.commit_from(local, dest)
    if part is None or part.node == 0:
        prune(uri, keep, part.nodes if part else 1)
    return dest


def prune(uri: str, keep: int, nodes: int = 1, newer: bool = False) -> list[str]:
    """Delete complete checkpoints beyond the newest `keep` (0: all), and incomplete ones older than the newest
    complete one; with `newer`, incomplete newer ones too (once training has ended, none is still on its way)."""
    found = steps(uri)
    complete = [(n, u) for n, u in found if complete_parts(u, nodes)]
    kept = {u for _, u in complete[-keep:]} if keep > 0 else set()
    newest = complete[-1][0] if complete else -1
    removed = []
    for n, u in found:
        if u in kept or (n > newest and not newer):  # a newer incomplete folder may still be on its way up
            continue
        store.delete(u)
        removed.append(u)
    if removed:
        log.info("checkpoints: removed %s", ", ".join(u.rsplit("/", 1)[-1] for u in removed))
    return removed


def latest_committed(uri: str, nodes: int = 1) -> tuple[int, str] | None:
    """The newest complete checkpoint under `uri` as (step, URI of its step folder), or None."""
    for n, _ in complete_checkpoints(uri, nodes):
        return n, store.join(uri, f"step-{n}")
    return None


def _download(parts: list[str], dest: Path, nodes: int) -> Path:
    """Bring a checkpoint's artifacts into the local folder `dest`, each verified against its manifest on the way
    (store.download); several nodes' parts are merged into one folder, which every node needs: each rank reads every
    rank's ZeRO shard on resume, and only node 0 holds the weights."""
    if len(parts) == 1:
        return store.download(parts[0], dest, scratch=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".parts-{dest.name}-{uuid.uuid4().hex[:8]}"
    merged = staging / "merged"
    try:
        merged.mkdir(parents=True)
        files: dict[str, dict] = {}
        for i, part in enumerate(parts):
            got = store.download(part, staging / f"node-{i}", scratch=True)
            for rel, meta in json.loads((got / store.MANIFEST).read_bytes())["files"].items():
                if rel in files:
                    if files[rel]["sha256"] != meta["sha256"]:
                        raise store.IntegrityError(f"{part}: node {i} saved a file that another node saved differently")
                    continue
                (merged / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(got / rel, merged / rel)
                files[rel] = meta
        (merged / NODES_FILE).write_text(json.dumps({"nodes": nodes}) + "\n")
        files[NODES_FILE] = {
            "size": (merged / NODES_FILE).stat().st_size,
            "sha256": store.sha256_file(merged / NODES_FILE),
        }
        # Every file was hashed as it came down: the merged manifest is made of the parts' ones, not a second read.
        data = store.manifest_bytes({"version": 1, "files": files})
        (merged / store.MANIFEST).write_bytes(data)
        (merged / store.COMMITTED).write_text(store.marker_text(data))
        store.place_dir(merged, dest, scratch=True)
        store.record_verified(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _whole(path: Path, nodes: int) -> bool:
    """A local checkpoint holds every node's files: always for one node; for several, only one merged from the
    store's parts (a node's own save holds its ranks' files alone)."""
    if nodes == 1:
        return True
    try:
        return json.loads((path / NODES_FILE).read_text())["nodes"] == nodes
    except (OSError, ValueError, KeyError, TypeError):
        return False


def restore_latest(uri: str, dest_dir: Path, nodes: int = 1) -> Path | None:
    """Download the newest complete checkpoint under `uri` that passes verification into `dest_dir/checkpoint-N`
    (the name the trainer's resume looks for); returns that folder, or None when there is none. A damaged one is
    named in a warning and the next older one is tried."""
    for step, parts in complete_checkpoints(uri, nodes):
        try:
            path = _download(parts, Path(dest_dir) / f"checkpoint-{step}", nodes)
        except (store.IntegrityError, store.NotCommittedError) as err:
            log.warning("checkpoint step-%d under %s is damaged, skipping it for an older one: %s", step, uri, err)
            continue
        log.info("restored checkpoint step-%d from %s", step, uri)
        return path
    return None


def restore_once(uri: str, work_dir: Path, node: Node | None = None) -> Path | None:
    """Make the newest complete checkpoint under `uri` available in `work_dir/checkpoints`, where the trainer
    resumes from. Every rank of a node may call this: a file lock lets the first download it and the others find
    it there; a local checkpoint of that step (an earlier attempt on this machine) that verifies is not downloaded
    again. With several nodes, every other local checkpoint is removed: each node must resume from the same step,
    the one the store holds whole, never from a save of its own that other nodes may lack."""
    node = node or Node.from_env()
    work_dir = Path(work_dir)
    local_dir = work_dir / "checkpoints"
    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / ".restore.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        chosen = None
        for step, parts in complete_checkpoints(uri, node.count):
            local = local_dir / f"checkpoint-{step}"
            if _whole(local, node.count) and is_complete(local, verify=True):
                chosen = local
                break
            try:
                chosen = _download(parts, local, node.count)
            except (store.IntegrityError, store.NotCommittedError) as err:
                log.warning("checkpoint step-%d under %s is damaged, skipping it for an older one: %s", step, uri, err)
                continue
            log.info("restored checkpoint step-%d from %s", step, uri)
            break
        if node.count > 1:
            for other in checkpoints(local_dir):
                if other != chosen:
                    shutil.rmtree(other, ignore_errors=True)
        return chosen


def prune_after_commit(uri: str, keep: int, nodes: int = 1) -> list[str]:
    """Once an arm's model is committed its checkpoints have done their work: keep the newest `keep` complete ones
    (0: none), and nothing incomplete."""
    return prune(uri, keep, nodes, newer=True)
