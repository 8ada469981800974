"""DICOM to 8-bit PNG, once, during prep: modality LUT (rescale), then the VOI LUT or the first window,
MONOCHROME1 inverted. Only pixel values leave this module: no tag (names, IDs, dates) is returned or logged.

A file that is not DICOM is rejected (pydicom reads it without `force`, which would parse any bytes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


class DicomError(ValueError):
    """An unusable DICOM file; `reason` is a short code for the quarantine (never a tag value)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _first(value) -> float:
    """Window center/width may hold several values (several windows): the first is the default view."""
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def window(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI function (PS3.3 C.11.2.1.2) mapped to 0..1.

    >>> window(np.array([500.0, 1500.0, 2500.0]), 1500.0, 1001.0).round(2).tolist()
    [0.0, 0.5, 1.0]
    """
    width = max(width, 1.0)
    out = (arr - (center - 0.5)) / (width - 1.0) + 0.5 if width > 1.0 else (arr > center - 0.5).astype(float)
    return np.clip(out, 0.0, 1.0)


def gray_levels(ds) -> np.ndarray:
    """The displayed gray levels of a single-frame grayscale dataset, as floats in 0..1 (1 = white)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError("dicom_not_grayscale")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise DicomError("dicom_multiframe")
    try:
        raw = ds.pixel_array
    except Exception:
        # No pixel data, or a compressed transfer syntax without an installed decoder.
        raise DicomError("dicom_pixels_unreadable") from None
    arr = apply_modality_lut(raw, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        # The LUT is indexed by the (integer) modality values.
        arr = apply_voi_lut(np.rint(arr).astype(np.int64), ds, prefer_lut=True).astype(np.float64)
        arr /= float(2**bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        arr = window(arr, _first(ds.WindowCenter), _first(ds.WindowWidth))
    else:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    arr = np.clip(arr, 0.0, 1.0)
    if photometric == "MONOCHROME1":  # high values are dark: invert so that bone is white as in MONOCHROME2
        arr = 1.0 - arr
    return arr


def read_dicom(path: Path) -> np.ndarray:
    """Gray levels (0..1) of the DICOM file at `path`; DicomError('not_dicom') for anything else."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)  # never force=True: a non-DICOM file must fail here
    except (InvalidDicomError, EOFError, OSError):
        raise DicomError("not_dicom") from None
    except Exception:
        raise DicomError("dicom_unparsable") from None
    return gray_levels(ds)


def dicom_to_png(src: Path, dst: Path) -> tuple[int, int]:
    """Convert a DICOM file to an 8-bit grayscale PNG holding pixels only; returns (width, height)."""
    arr = read_dicom(src)
    image = Image.fromarray(np.round(arr * 255.0).astype(np.uint8), mode="L")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, dst)
    return image.width, image.height
