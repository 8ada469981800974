"""Image checks run on every row before it enters a dataset: path confinement, format, size, truncation.

The format is read from the file's first bytes and only allowed decoders ever see the file; the pixel count
comes from the header, so a decompression bomb is rejected before a single pixel is decoded.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

from PIL import Image

# Larger images are quarantined as `image_too_large`; the processor resizes everything to at most
# model.max_pixels (the paper: 401,408) anyway, so nothing of value is lost.
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_BYTES = 256 * 2**20
DEFAULT_FORMATS = ("PNG", "JPEG")

# Signatures of the formats Pillow can open, so that a disallowed format is named as such rather than
# handed to a decoder. DICOM has its magic at offset 128.
_SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG2000"),
    (128, b"DICM", "DICOM"),
]


def sniff_format(head: bytes) -> str | None:
    """The image format a file's first bytes announce, or None.

    >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8)), sniff_format(b"\\xff\\xd8\\xff\\xe0")
    ('PNG', 'JPEG')
    >>> sniff_format(b"hello") is None
    True
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    return None


@functools.lru_cache(maxsize=64)
def _real(root: str) -> str:
    return os.path.realpath(root)


def confined(root: Path | str, rel: str) -> Path | None:
    """`root/rel` when `rel` is a relative path that stays inside `root` (symlinks resolved), else None."""
    if not rel or "\x00" in rel or rel.startswith("/") or ".." in rel.split("/"):
        return None
    real_root = _real(str(root))
    full = os.path.realpath(os.path.join(real_root, rel))
    if not full.startswith(real_root.rstrip("/") + "/"):
        return None
    return Path(full)


def check_image(
    root: Path | str, rel: str, formats: tuple[str, ...] = DEFAULT_FORMATS, max_pixels: int = MAX_IMAGE_PIXELS
) -> str | None:
    """Reason code if the image at `rel` (relative to `root`) is unusable, else None."""
    path = confined(root, rel)
    if path is None:
        return "image_path_outside_root"
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after Pillow is done with it
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return "image_missing"
    except OSError:
        return "image_unreadable"
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_IMAGE_BYTES:
                return "image_too_large"
            # One read: Pillow parses from memory instead of issuing dozens of small reads and seeks per file.
            data = f.read()
        except OSError:
            return "image_unreadable"
    if not data:
        return "image_empty"
    return _check_bytes(data, formats, max_pixels)


def _check_bytes(data: bytes, formats: tuple[str, ...], max_pixels: int) -> str | None:
    head = data[:132]
    fmt = sniff_format(head)
    if fmt is None:
        return "image_unreadable"
    if fmt not in formats:
        return "image_format_not_allowed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                width, height = im.size  # from the header; nothing decoded yet
                if width * height > max_pixels:
                    return "image_too_large"
                if fmt == "JPEG":
                    # DCT scaling still reads every byte of the scan, so truncation is caught at 1/64 the cost.
                    im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
                im.load()
        except Image.DecompressionBombError:
            return "image_too_large"
        except EOFError:
            return "image_truncated"
        except (OSError, SyntaxError, ValueError) as err:
            return "image_truncated" if "truncated" in str(err).lower() else "image_unreadable"
        except Exception:
            return "image_unreadable"
    return None


def check_paths(task: tuple[str, tuple[str, ...], tuple[str, ...], int]) -> str | None:
    """Worker entry point: (root, relative paths, allowed formats, max pixels) -> the first reason or None."""
    root, rels, formats, max_pixels = task
    for rel in rels:
        reason = check_image(root, rel, formats, max_pixels)
        if reason:
            return reason
    return None
