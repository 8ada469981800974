"""`medrl prep`: read a source, check every row, quarantine the bad ones with a reason, write the dataset.

Rows stream through in batches: text checks here, image checks in worker processes, good records to a spill
file on disk, so memory does not grow with the row count. The prepared directory (train.jsonl, test.jsonl,
images/, quarantine.jsonl, summary.json) is written only when the share of bad rows is within
data.max_bad_fraction; the CLI and the pipeline also commit it whole (store.commit_dir).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Set
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from medrl import store
from medrl.config import DataConfig
from medrl.data import leakage, synthetic
from medrl.data.cxr import mimic_cxr, ms_cxr, vindr_cxr
from medrl.data.cxr import synthetic as cxr_synthetic
from medrl.data.images import MAX_IMAGE_PIXELS, check_image, check_paths, confined, to_8bit
from medrl.data.records import LETTERS, Record, write_json, write_jsonl
from medrl.data.sources import PrepError, Row, Source, fold, hf_vqa, jsonl, omnimedvqa, pmc_vqa, slake

__all__ = ["SOURCES", "PrepError", "Row", "check_fields", "check_record", "prepare"]

log = logging.getLogger("medrl")

BATCH = 512  # rows per batch handed to the image workers
IN_FLIGHT = 2  # batches checked while the next one is read
FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
HINTS = {
    "image_format_not_allowed": "To accept another format, list it in --image-formats (data.image_formats).",
    "image_missing": "Are the images unpacked where the source expects them (see README: medrl prep)?",
    "question_not_utf8": "Is the file saved in another encoding? Convert it to UTF-8.",
}


def _synthetic(cfg: DataConfig, scratch: Path) -> tuple[Path, Iterator[Row]]:
    n_train = cfg.train_size or 256
    n_test = cfg.test_size or 64

    def rows() -> Iterator[Row]:
        low, high = cfg.lesion_brightness  # two, as DataConfig checks
        recs = synthetic.generate(
            n_train + n_test,
            scratch,
            cfg.seed,
            cfg.image_size,
            task=cfg.synthetic_task,
            brightness=(low, high),
        )
        for i, rec in enumerate(recs):
            rec.split = "train" if i < n_train else "test"
            rec.image = Path(str(rec.image)).name
            rec.meta["answer_type"] = "closed"
            yield Row(number=i + 1, record=rec)

    return scratch / "images", rows()


SOURCES: dict[str, Source] = {
    "synthetic": _synthetic,
    "pmc-vqa": pmc_vqa.read,
    "vqa-rad": hf_vqa.read_vqa_rad,
    "path-vqa": hf_vqa.read_path_vqa,
    "slake": slake.read,
    "omnimedvqa": omnimedvqa.read,
    "jsonl": jsonl.read,
    "cxr-synthetic": cxr_synthetic.source,
    "mimic-cxr": mimic_cxr.source,
    "ms-cxr": ms_cxr.source,
    "vindr-cxr": vindr_cxr.source,
}


def _not_utf8(value: str) -> bool:
    """Lone surrogates (bytes that were not UTF-8) or NUL characters."""
    if value.isascii():
        return "\x00" in value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\x00" in value


def check_fields(rec: Record) -> str | None:
    """Reason code if the text of a record is unusable (its images are checked apart), else None."""
    if _not_utf8(rec.question):
        return "question_not_utf8"
    if not rec.question.strip():
        return "question_empty"
    if _not_utf8(rec.answer) or any(_not_utf8(c) for c in rec.choices):
        return "text_not_utf8"
    if not rec.answer.strip():
        return "answer_empty"
    if rec.choices:
        folded = {fold(c) for c in rec.choices}
        # one option is no question to choose in; more than there are letters (A-J) cannot be labelled
        if not 2 <= len(rec.choices) <= len(LETTERS) or "" in folded or len(folded) != len(rec.choices):
            return "choices_invalid"
        if rec.answer not in rec.choices:
            return "answer_not_in_choices"
        if rec.answer_label:
            if rec.answer_label not in LETTERS[: len(rec.choices)] or len(rec.answer_label) != 1:
                return "label_invalid"  # a letter of no option (or no letter at all)
            if rec.answer_label != LETTERS[rec.choices.index(rec.answer)]:
                return "label_mismatch"
    if rec.task == "vqa" and not rec.images:
        return "image_missing"
    return None


def check_record(
    rec: Record, root: Path, formats: tuple[str, ...] = ("PNG", "JPEG"), max_pixels: int = MAX_IMAGE_PIXELS
) -> str | None:
    """Reason code if a record is unusable (text, then each image), else None."""
    reason = check_fields(rec)
    if reason:
        return reason
    for rel in rec.images:
        reason = check_image(root, rel, formats, max_pixels)
        if reason:
            return reason
    return None


def _formats(cfg: DataConfig) -> tuple[str, ...]:
    names = tuple(FORMAT_ALIASES.get(f.upper(), f.upper()) for f in cfg.image_formats)
    known = {"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "JPEG2000"}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise PrepError(f"data.image_formats={cfg.image_formats}: choose from {', '.join(sorted(known))}")
    return names


def check_and_print(task: tuple[str, tuple[str, ...], tuple[str, ...], int, int]) -> tuple[str | None, list | None]:
    """Worker entry point: the image check of `check_paths`, then (when the last field asks: 1 for a test row, 2
    for a training row, which also hashes trimmed frames) the leak fingerprints of the row's images."""
    reason = check_paths(task[:4])
    if reason or not task[4]:
        return reason, None
    root, rels = task[0], task[1]
    prints = []
    for rel in rels:
        path = confined(root, rel)
        try:
            prints.append(leakage.fingerprint(Path(path).read_bytes(), trims=task[4] == 2))  # type: ignore[arg-type]
        except Exception:
            return "image_unreadable", None  # passed the check but Pillow cannot convert it; not a usable scan
    return None, prints


class ImageChecker:
    """Checks the images of batches of rows in worker processes, several batches in flight, results in order.

    The pool starts with the first full batch, so small inputs never pay for starting processes. Workers are
    spawned, not forked: the parent may hold torch's threads, and a fresh interpreter takes this checkout's
    sys.path rather than whatever a fork server imported first.
    """

    def __init__(self, root: Path, formats: tuple[str, ...], workers: int):
        self.root, self.formats, self.workers = str(root), formats, workers
        self.pool: Any = None

    def submit(self, images: list[list[str]], prints: list[int] | None = None) -> Callable[[], list]:
        """Each row's (reason, fingerprints); `prints`: per row 0 (none), 1 (test row) or 2 (training row)."""
        marks = prints or [0] * len(images)
        tasks = [
            (self.root, tuple(rels), self.formats, MAX_IMAGE_PIXELS, m) for rels, m in zip(images, marks, strict=True)
        ]
        if self.pool is None and self.workers > 1 and len(tasks) >= BATCH:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        if self.pool is None:
            done = [check_and_print(t) for t in tasks]
            return lambda: done
        pending = self.pool.map(check_and_print, tasks, chunksize=max(1, len(tasks) // (self.workers * 4)))

        def results() -> list:
            try:
                return list(pending)
            except BrokenProcessPool:
                raise PrepError(
                    "an image-checking process died (out of memory or a crashing decoder); "
                    "run again with --workers 1 to find the row"
                ) from None

        return results

    def close(self, ok: bool) -> None:
        if self.pool is None:
            return
        if ok:
            self.pool.shutdown(wait=True)
            return
        # On an error, stop the workers rather than wait: Python 3.11's executor can hang in shutdown(wait=True)
        # after a task failed to pickle.
        processes = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()


class Spill:
    """Good records of one split on disk, with a sort key each, so the subset draw holds no record in memory."""

    def __init__(self, path: Path, seed: int):
        self.path, self.seed = path, seed
        self.file = path.open("wb")
        self.keys = array("Q")
        self.offsets = array("Q")
        self.rows: list[tuple[int, str]] = []  # source row of each record, for a later quarantine

    def add(self, line: bytes, rec_id: str, row: Row) -> None:
        self.rows.append((row.number, row.file))
        self.offsets.append(self.file.tell())
        digest = hashlib.blake2b(f"{self.seed}\x00{rec_id}".encode(), digest_size=8).digest()
        self.keys.append(int.from_bytes(digest, "big"))
        self.file.write(line)

    def selected(self, size: int | None, left_out: Set[int] = frozenset()) -> Iterator[dict[str, Any]]:
        """The first `size` records in key order: a seeded shuffle that is the same for any input order,
        and a larger size keeps every record of a smaller one. Written in that order, so
        `evaluate.limit` takes a random sample rather than the first rows of the source."""
        import numpy as np

        self.file.close()
        order = np.argsort(np.frombuffer(self.keys, dtype=np.uint64), kind="stable")
        if left_out:
            order = order[~np.isin(order, np.fromiter(left_out, dtype=np.int64))]
        if size is not None:
            order = order[:size]
        end = self.path.stat().st_size
        # pread, not mmap or a buffered reader: touched pages of a mapped spill would count as resident memory
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i in order:
                start = self.offsets[i]
                stop = self.offsets[i + 1] if i + 1 < len(self.offsets) else end
                yield json.loads(os.pread(fd, stop - start, start))
        finally:
            os.close(fd)


class Tally:
    """Counts by outcome and reason; quarantine lines go straight to a file."""

    def __init__(self, quarantine: Path):
        self.file = quarantine.open("w", encoding="utf-8")
        self.rows = 0
        self.outcomes: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.filtered: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def quarantine(self, row: Row, reason: str) -> None:
        entry: dict[str, Any] = {"source_row": row.number, "reason": reason}
        if row.file:
            entry = {"file": row.file, **entry}
        self.file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.reasons[reason] += 1
        self.outcomes[reason if reason in ("duplicate", "leak") else "bad"] += 1
        where = self.examples.setdefault(reason, [])
        if len(where) < 3:
            where.append(f"{row.file} row {row.number}" if row.file else f"row {row.number}")


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def prepare(cfg: DataConfig, out: Path, workers: int | None = None) -> dict:
    """Write the prepared dataset for `cfg` into the (empty, staging) directory `out`; return the summary."""
    formats = _formats(cfg)
    cfg = from_store(cfg)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".prep-", dir=out))
    try:
        return _prepare(cfg, out, scratch, formats, workers or default_workers())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def from_store(cfg: DataConfig) -> DataConfig:
    """`data.input` / `data.images` given as store URIs (s3://..., file://...): the committed folder, or a file
    inside one, read from the local cache after its sha256s are checked. Other inputs are left as they are."""
    update = {}
    for field in ("input", "images"):
        value = getattr(cfg, field)
        if value and value.startswith(("s3://", "file://")):
            update[field] = str(_store_path(field, value.rstrip("/")))
    return cfg.model_copy(update=update) if update else cfg


def _store_path(field: str, uri: str) -> Path:
    if store.is_committed(uri):
        return store.open_dir(uri, verify=True)
    parent, _, name = uri.rpartition("/")
    if "/" in parent.split("://", 1)[-1] and store.is_committed(parent):
        path = store.open_dir(parent, verify=True) / name
        if path.exists():
            return path
    raise PrepError(
        f"data.{field}={uri}: no committed folder (or file inside one) there; upload the dataset with "
        f"`medrl store put <folder> {uri}`"
    )


def _prepare(cfg: DataConfig, out: Path, scratch: Path, formats: tuple[str, ...], workers: int) -> dict:
    root, rows = SOURCES[cfg.source](cfg, scratch)
    tally = Tally(scratch / "quarantine.jsonl")
    spills = {split: Spill(scratch / f"{split}.spill", cfg.seed) for split in ("train", "test")}
    checker = ImageChecker(root, formats, workers)
    prints = {split: leakage.Prints() for split in spills} if cfg.leak_check != "off" else None
    seen: set[int] = set()
    seen_ids: set[int] = set()

    def finish(batch: list[tuple[Row, str | None]], results: Callable[[], list]) -> None:
        """Rows of a batch in source order: a text reason, else the image reason, else dedup and spill."""
        image_results = iter(results())
        for row, text_reason in batch:
            fingerprints = None
            reason = text_reason
            if not reason:
                reason, fingerprints = next(image_results)
            if reason:
                tally.quarantine(row, reason)
                continue
            rec = row.record
            assert rec is not None
            key = _digest(json.dumps([rec.images, fold(rec.question)], ensure_ascii=False))
            if key in seen:
                tally.quarantine(row, "duplicate")
                continue
            rec_id = _digest(rec.id)
            if rec_id in seen_ids:
                tally.quarantine(row, "duplicate_id")
                continue
            data = rec.model_dump(mode="json", exclude_none=True)
            placed = [_placed(p) for p in rec.images]
            data["image"] = placed if isinstance(rec.image, list) else placed[0]
            data[_SOURCE_PATHS] = rec.images
            try:
                line = (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")
            except UnicodeEncodeError:
                tally.quarantine(row, "text_not_utf8")
                continue
            seen.add(key)
            seen_ids.add(rec_id)
            spills[rec.split].add(line, rec.id, row)
            if prints is not None:
                prints[rec.split].add(fingerprints or [], _digest(fold(rec.question)))

    ok = False
    in_flight: deque = deque()
    try:
        for batch in _batches(rows, BATCH):
            tally.rows += len(batch)
            todo: list[tuple[Row, str | None]] = []
            for row in batch:
                if row.filtered:
                    tally.filtered[row.filtered] += 1
                    tally.outcomes["filtered"] += 1
                    continue
                todo.append((row, row.reason or (check_fields(row.record) if row.record else "row_malformed")))
            checked = [row.record for row, reason in todo if reason is None]
            images = [rec.images for rec in checked]  # type: ignore[union-attr]
            marks = [(2 if rec.split == "train" else 1) if prints else 0 for rec in checked]  # type: ignore[union-attr]
            in_flight.append((todo, checker.submit(images, marks)))
            while len(in_flight) > IN_FLIGHT:
                finish(*in_flight.popleft())
            if tally.rows % (BATCH * 20) == 0:
                log.info("prep %s: %d rows read, %d quarantined", cfg.source, tally.rows, tally.outcomes["bad"])
        while in_flight:
            finish(*in_flight.popleft())
        ok = True
    finally:
        checker.close(ok)
        if not ok:
            tally.file.close()
            for spill in spills.values():
                spill.file.close()
            for split_prints in (prints or {}).values():
                split_prints.close()

    leaks: set[int] = set()
    if prints is not None:
        try:
            leaks = set(
                leakage.find_leaks(
                    prints["train"], prints["test"], cfg.leak_distance, same_question=cfg.leak_check == "image_question"
                )
            )
        finally:
            for split_prints in prints.values():
                split_prints.close()
        for position in sorted(leaks):
            number, file = spills["test"].rows[position]
            row = Row(number=number, file=file)
            tally.quarantine(row, "leak")
    tally.file.close()

    bad = tally.outcomes["bad"]
    considered = tally.rows - tally.outcomes["filtered"]
    bad_fraction = bad / max(considered, 1)
    if bad_fraction > cfg.max_bad_fraction or considered == 0:
        if considered == 0:
            raise PrepError(f"source '{cfg.source}' at {cfg.input}: no rows to prepare (check --input and --lang)")
        top = ", ".join(
            f"{r} ({n}; e.g. {', '.join(tally.examples[r])})"
            for r, n in tally.reasons.most_common()
            if r != "duplicate"
        )
        hints = "".join(f" {HINTS[r]}" for r, _ in tally.reasons.most_common(3) if r in HINTS)
        raise PrepError(
            f"{bad} of {considered} rows of source '{cfg.source}' are bad ({bad_fraction:.1%} > "
            f"data.max_bad_fraction={cfg.max_bad_fraction}): {_top(top)}.{hints} Fix the input, or raise "
            "--max-bad-fraction to prepare the good rows and quarantine the rest."
        )

    read = (
        f"{tally.rows} rows read: {len(spills['test'].keys)} in the test split, {bad} quarantined, "
        f"{tally.outcomes['filtered']} filtered"
    )
    if not spills["train"].keys and not spills["test"].keys:
        raise PrepError(
            f"source '{cfg.source}' at {cfg.input}: both splits are empty ({read}); check the records' split "
            "in --input, and the quarantine reasons"
        )
    if not spills["train"].keys:
        # An evaluation-only dataset (MS-CXR, say, is a test set) is a real use; training on it is refused by name
        # before a model loads (train.common.check_train_rows), not deep inside TRL.
        log.warning("source '%s': the train split is empty (%s): this dataset can be evaluated, not trained on",
                    cfg.source, read)  # fmt: skip
    owned = root.resolve().is_relative_to(scratch.resolve())
    sizes = {"train": cfg.train_size, "test": cfg.test_size}
    counts: dict[str, int] = {}
    answer_types: dict[str, Counter[str]] = {}
    placer = ImagePlacer(root, out, owned)
    for split, spill in spills.items():
        kinds: Counter[str] = Counter()
        left_out = leaks if split == "test" else set()
        selected = spill.selected(sizes[split], left_out)
        counts[split] = write_jsonl(out / f"{split}.jsonl", _with_images(selected, placer, kinds))
        answer_types[split] = kinds
    os.replace(scratch / "quarantine.jsonl", out / "quarantine.jsonl")

    kept = counts["train"] + counts["test"]
    tally.outcomes["kept"] = kept
    tally.outcomes["unselected"] = sum(len(s.keys) for s in spills.values()) - kept - len(leaks)
    summary = {
        "source": cfg.source,
        "rows": tally.rows,
        "train": counts["train"],
        "test": counts["test"],
        "quarantined": sum(tally.reasons.values()),
        "reasons": dict(tally.reasons.most_common()),
        "outcomes": {k: tally.outcomes[k] for k in ("kept", "unselected", "duplicate", "leak", "filtered", "bad")},
        "leak_check": {"mode": cfg.leak_check, "distance": cfg.leak_distance, "leaked": len(leaks)},
        "filtered": dict(tally.filtered),
        "bad_fraction": round(bad_fraction, 6),
        "answer_types": {s: {k: answer_types[s][k] for k in ("closed", "open")} for s in ("train", "test")},
        "images_windowed": placer.windowed,
    }
    write_json(out / "summary.json", summary)
    return summary


def _top(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def _digest(value: str) -> int:
    data = value.encode("utf-8", errors="surrogateescape")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


_SOURCE_PATHS = "_source_images"  # where a spilled record's images lie under the source root; not written out


def _placed(rel: str) -> str:
    """Where an image goes in the prepared dataset: under images/, keeping its path below the source's root.

    >>> _placed("xmlab1/source.jpg")
    'images/xmlab1/source.jpg'
    """
    return f"images/{rel}"


class ImagePlacer:
    """Copies (or, out of scratch, moves) kept images under out/images, each file once, high-bit-depth scans
    windowed into 8 bits on the way (images.to_8bit): every reader then sees the same 8-bit pixels. One thread: on a
    shared disk, parallel file creation in one folder was slower than copying in turn."""

    def __init__(self, root: Path, out: Path, owned: bool):
        self.root, self.out, self.owned = root, out, owned
        self.made: set[Path] = set()  # folders; few, whatever the row count
        self.windowed = 0  # high-bit-depth images converted to 8 bits

    def place(self, rel: str) -> None:
        dst = self.out / _placed(rel)
        if dst.parent not in self.made:
            dst.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(dst.parent)
        if dst.exists():  # a picture several questions share
            return
        try:
            self.windowed += to_8bit(self.root / rel, dst, move=self.owned)
        except FileNotFoundError:
            raise PrepError("an image vanished while prep ran; run prep again") from None


def _with_images(
    records: Iterator[dict[str, Any]], placer: ImagePlacer, kinds: Counter[str]
) -> Iterator[dict[str, Any]]:
    """Each selected record, once its images are on their way to out/images."""
    for data in records:
        for rel in data.pop(_SOURCE_PATHS):
            placer.place(rel)
        kinds[str(data.get("meta", {}).get("answer_type", "open"))] += 1
        yield data
