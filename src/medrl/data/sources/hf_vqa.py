"""VQA-RAD and PathVQA as Hugging Face datasets (`image`, `question`, `answer`) on local disk: a folder written by
`save_to_disk`, or the hub's parquet files (`data/train-*.parquet`, ...); on a cluster, a hub name.

Images are embedded as bytes; each distinct image is written once, named by its content hash, so the same
picture asked about twice is one file and a repeated (image, question) pair is caught as a duplicate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from medrl.config import DataConfig
from medrl.data.images import confined, sniff_format
from medrl.data.sources import PrepError, Row, held_out, split_of_name, text, vqa_record

COLUMNS = ("image", "question", "answer")
EXPECTED = "image, question, answer"
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
BATCH = 64
EXTENSIONS = {"PNG": "png", "JPEG": "jpg"}

# (label for quarantine rows, split or None to hash-split, a function yielding row dicts)
Part = tuple[str, str | None, Callable[[], Iterator[dict[str, Any]]]]


def _saved(path: Path) -> list[Part]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise PrepError(
            f"{path}: cannot load it as a saved dataset ({type(err).__name__}); expected columns {EXPECTED}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        return [_dataset_part(str(path / key), key, key, ds) for key, ds in loaded.items()]
    return [_dataset_part(str(path), path.name, path.name, loaded)]


def _dataset_part(where: str, label: str, key: str, ds) -> Part:
    """`where` names the data in errors, `label` in quarantine rows (no folders of this machine)."""
    import datasets

    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing:
        raise PrepError(f"{where}: missing column(s) {', '.join(missing)}; expected columns {EXPECTED}")
    if isinstance(ds.features.get("image"), datasets.Image):
        ds = ds.cast_column("image", datasets.Image(decode=False))  # bytes as stored; nothing decoded here
    ds = ds.select_columns(list(COLUMNS))

    def batches() -> Iterator[dict[str, Any]]:
        for batch in ds.iter(batch_size=BATCH):
            columns = [batch[c] for c in COLUMNS]
            for values in zip(*columns, strict=True):
                yield dict(zip(COLUMNS, values, strict=True))

    return label, split_of_name(key), batches


def _parquet(files: list[Path]) -> list[Part]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts: list[Part] = []
    for file in files:
        try:
            names = pq.ParquetFile(file).schema_arrow.names
        except (OSError, pa.ArrowException) as err:
            raise PrepError(
                f"{file}: cannot read it as parquet ({type(err).__name__}); expected columns {EXPECTED}"
            ) from None
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise PrepError(f"{file}: missing column(s) {', '.join(missing)}; expected columns {EXPECTED}")
        split = split_of_name(file.name) or split_of_name(file.parent.name)

        def batches(file: Path = file) -> Iterator[dict[str, Any]]:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=BATCH, columns=list(COLUMNS)):
                yield from batch.to_pylist()

        parts.append((file.name, split, batches))
    return parts


def _hub(name: str) -> list[Part]:
    import datasets

    try:
        loaded = datasets.load_dataset(name)
    except Exception as err:
        raise PrepError(
            f"--input {name}: not a local path, and loading it as a hub dataset failed ({type(err).__name__}). "
            "Where no hub is reachable, save the dataset (save_to_disk or its parquet files) and pass that folder."
        ) from None
    return [_dataset_part(f"{name} ({key})", key, key, ds) for key, ds in loaded.items()]


def parts(cfg: DataConfig) -> tuple[Path | None, list[Part]]:
    """The input's splits, and the folder that relative image paths inside it refer to."""
    if not cfg.input:
        raise PrepError(f"--input is required for source '{cfg.source}': a saved dataset, parquet files or a hub name")
    path = Path(cfg.input).expanduser()
    if not path.exists():
        if HUB_NAME.fullmatch(cfg.input):
            return None, _hub(cfg.input)
        raise PrepError(f"--input {cfg.input}: no such file or folder (source '{cfg.source}')")
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return path, _saved(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not files:
        raise PrepError(
            f"--input {path}: neither a saved dataset (dataset_dict.json or state.json) nor parquet files; "
            f"expected columns {EXPECTED}"
        )
    return (path if path.is_dir() else path.parent), _parquet(files)


def _image_bytes(value: Any, base: Path | None) -> bytes | str:
    """The image's bytes, or a reason code. Hub rows hold {'bytes': ..., 'path': ...}; bytes may be absent."""
    if isinstance(value, dict):
        data, rel = value.get("bytes"), value.get("path")
    else:
        data, rel = value, None
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(rel, str) and rel and base is not None:
        path = confined(base, rel)
        if path is None:
            return "image_path_outside_root"
        if path.is_file():
            return path.read_bytes()
    return "image_missing"


def write_image(images: Path, data: bytes) -> str:
    """Store `data` once under its content hash; returns the file name."""
    fmt = sniff_format(data[:132])
    name = f"{hashlib.sha256(data).hexdigest()[:24]}.{EXTENSIONS.get(fmt or '', (fmt or 'bin').lower())}"
    path = images / name
    if not path.exists():
        tmp = path.with_name(f".{name}.part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return name


def read(cfg: DataConfig, scratch: Path, name: str) -> tuple[Path, Iterator[Row]]:
    base, found = parts(cfg)
    images = scratch / f"{name}-images"
    images.mkdir(parents=True, exist_ok=True)

    def rows() -> Iterator[Row]:
        for label, split, batches in found:
            stem = Path(label).name.split(".")[0]
            for number, item in enumerate(batches(), start=1):
                data = _image_bytes(item.get("image"), base)
                if isinstance(data, str):
                    yield Row(number, reason=data, file=label)
                    continue
                image = write_image(images, data)
                record = vqa_record(
                    id=f"{name}-{stem}-{number}",
                    image=image,
                    question=text(item.get("question")),
                    answer=text(item.get("answer")),
                    source=name,
                    split=split or ("test" if held_out(image, cfg.test_fraction) else "train"),
                    cfg=cfg,
                    meta={"source_split": stem},
                )
                yield Row(number, record, file=label)

    return images, rows()


read_vqa_rad = partial(read, name="vqa-rad")
read_path_vqa = partial(read, name="path-vqa")
