"""Image checks run on every row before it enters a dataset (path confinement, format, size, truncation), the
windowing of high-bit-depth scans into 8 bits, and the one way readers open a prepared image.

The format is read from the file's first bytes and only allowed decoders ever see the file; the pixel count
comes from the header, so a decompression bomb is rejected before a single pixel is decoded.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from medrl.errors import MedrlError

# Larger images are quarantined as `image_too_large`; the processor resizes everything to at most
# model.max_pixels (the paper: 401,408) anyway, so nothing of value is lost.
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_BYTES = 256 * 2**20
DEFAULT_FORMATS = ("PNG", "JPEG")
# Smaller images are quarantined as `image_too_small`: Qwen2-VL cuts images into 14-pixel patches merged 2 x 2, so a
# side under 28 pixels is not one image token; its processor would blow the pixel up and the model see no picture.
MIN_IMAGE_SIDE = 28
# Qwen2-VL's processor refuses images whose long side exceeds 200 times the short one (`image_aspect_ratio`).
MAX_ASPECT_RATIO = 200
# Pillow modes of more than 8 bits per pixel (16-bit PNG/TIFF, 32-bit integer, float). Pillow's convert("RGB")
# clips them at 255, so a 16-bit X-ray would become a white picture: prep windows them into 8 bits instead.
HIGH_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

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
    if fmt == "PNG" and head[24:25] == b"\x10" and head[25:26] in (b"\x02", b"\x04", b"\x06"):
        # 16-bit RGB, grey+alpha or RGBA: Pillow keeps each sample's high byte alone, so a 12-bit scan stored in
        # 16 bits (values 0..4095) decodes almost black. 16-bit grey is windowed; these are refused.
        return "image_16bit_colour"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                width, height = im.size  # from the header; nothing decoded yet
                if width * height > max_pixels:
                    return "image_too_large"
                if min(width, height) < MIN_IMAGE_SIDE:
                    return "image_too_small"
                if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
                    return "image_aspect_ratio"
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


def window_8bit(im: Image.Image) -> Image.Image:
    """A high-bit-depth grayscale image as 8-bit (mode L), windowed as a radiology viewer does without a stored
    window: the full range of its pixel values, min to max, spread linearly over 0..255 (a flat image is black), and
    inverted for a WhiteIsZero TIFF, so that what the file calls white is white.

    >>> np.asarray(window_8bit(Image.fromarray(np.array([[1000, 3000, 5000]], dtype=np.uint16)))).tolist()
    [[0, 128, 255]]
    """
    arr = np.asarray(im, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return Image.new("L", im.size)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    scaled = (np.where(finite, arr, lo) - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    if _min_is_white(im):
        scaled = 1.0 - scaled
    return Image.fromarray(np.round(scaled * 255.0).astype(np.uint8), mode="L")


def _min_is_white(im: Image.Image) -> bool:
    """A TIFF whose photometric interpretation is WhiteIsZero (0): high values are dark, as in DICOM's MONOCHROME1.
    Pillow inverts such 8-bit files as it decodes them, but hands 16-bit and float ones over as stored."""
    tags = getattr(im, "tag_v2", None)
    return tags is not None and tags.get(262) == 0


def to_8bit(src: Path, dst: Path, move: bool = False) -> bool:
    """Put `src` at `dst` with its pixels in 8 bits: a high-bit-depth image windowed (`window_8bit`) and saved in its
    own format under a temporary name, then renamed; anything else copied (or, with `move`, moved) byte for byte.
    Returns whether it was windowed."""
    with Image.open(src) as im:
        windowed = window_8bit(im) if im.mode in HIGH_BIT_MODES else None
        fmt = im.format or "PNG"
    if windowed is None:
        if move:
            os.replace(src, dst)
        else:
            shutil.copyfile(src, dst)
        return False
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        windowed.save(tmp, format=fmt)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return True


class ImageDepthError(MedrlError, ValueError):
    """A reader met an image of more than 8 bits per pixel (or none at all): the dataset was not prepared, or not
    whole, by this medrl's prep."""


def _depth_error(mode: str, what: str) -> ImageDepthError:
    return ImageDepthError(
        f"{what} has more than 8 bits per pixel (mode {mode}); models would see it clipped to white. Prepared "
        "datasets hold 8-bit images: prepare the dataset again with `medrl prep`, which windows high-bit-depth "
        "scans into 8 bits"
    )


def open_rgb(path: Path | str, what: str = "an image of the dataset") -> Image.Image:
    """The image at `path` decoded as RGB (transparency on white), upright by its EXIF orientation, for a model;
    ImageDepthError for a high-bit-depth image, which convert("RGB") would clip. `what` names the image in the
    error (never its path: it may carry patient data)."""
    with Image.open(path) as im:
        if im.mode in HIGH_BIT_MODES:
            raise _depth_error(im.mode, what)
        # Upright by its EXIF orientation, as training sees it: datasets' Image feature turns it so, and a photo
        # that trained upright must not be evaluated on its side
        upright = ImageOps.exif_transpose(im)
        if "A" in im.getbands() or "transparency" in im.info:
            # Transparent parts on white, as transformers' image processors put the images training hands them;
            # convert("RGB") would show what lies under them (often black: black labels on a black figure)
            rgba = upright.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return upright.convert("RGB")


def require_8bit(paths: Iterable[Path | str], what: str) -> None:
    """Refuse (ImageDepthError) any of `paths` with more than 8 bits per pixel, from the headers alone: training
    decodes images lazily, and an error in the middle of a run would waste it."""
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                mode = im.mode
        except OSError:  # missing or not an image: named by its number, never its path
            raise ImageDepthError(
                f"image {i + 1} of {what} is missing or unreadable; the dataset is damaged: prepare it again with "
                "`medrl prep`"
            ) from None
        if mode in HIGH_BIT_MODES:
            raise _depth_error(mode, f"image {i + 1} of {what}")
