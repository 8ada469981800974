"""Checkpoint upload through the store (hashing, manifest, commit marker) against plain `fput_object` of the
same files, side by side on one SeaweedFS; goal: the store reaches at least 0.9 of plain throughput."""

from __future__ import annotations

import os
import statistics
import time

from medrl import store

MiB = 1 << 20
# The shape of a checkpoint: weights and optimizer state dominate, plus a few small files.
FILES = {
    "model.safetensors": 48 * MiB,
    "optimizer.pt": 96 * MiB,
    "scheduler.pt": 1500,
    "rng_state.pth": 15_000,
    "trainer_state.json": 4_000,
    "config.json": 1_200,
}
ROUNDS = 3


def test_checkpoint_upload_throughput(s3_bucket, seaweed, tmp_path):
    ckpt = tmp_path / "checkpoint-100"
    ckpt.mkdir()
    for name, size in FILES.items():
        (ckpt / name).write_bytes(os.urandom(size))
    total = sum(FILES.values())
    client = seaweed.client()
    bucket = s3_bucket.removeprefix("s3://")
    store.write_text(f"{s3_bucket}/warm-up", "x")  # creates the bucket; connections warm

    def plain(i: int) -> float:
        start = time.perf_counter()
        for name in FILES:
            client.fput_object(bucket, f"plain/{i}/{name}", str(ckpt / name))
        return time.perf_counter() - start

    def through_store(i: int) -> float:
        start = time.perf_counter()
        store.commit_from(ckpt, f"{s3_bucket}/store/step-{i}")
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"plain": [], "store": []}
    for i in range(ROUNDS):  # alternate, so both see the same machine load
        times["plain"].append(plain(i))
        times["store"].append(through_store(i))
    assert store.verify(f"{s3_bucket}/store/step-0")["bytes"] == total

    rate = {k: total / MiB / statistics.median(v) for k, v in times.items()}
    ratio = rate["store"] / rate["plain"]
    print(
        f"\ncheckpoint upload ({total / MiB:.0f} MiB, {len(FILES)} files, median of {ROUNDS}): "
        f"store {rate['store']:.0f} MiB/s, plain fput_object {rate['plain']:.0f} MiB/s, "
        f"ratio {ratio:.2f} (goal >= 0.90)"
    )
    assert ratio >= 0.9, f"checkpoint upload through the store at {ratio:.2f} of plain fput_object (goal >= 0.90)"
