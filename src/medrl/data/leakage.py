"""Train/test leakage: a test image that is a training image, the same bytes, the same pixels, or a re-encoded,
resized or slightly cropped copy of one.

Each image gets a fingerprint: digests of its bytes and of its decoded pixels, a 64-bit DCT perceptual hash
(pHash) of its whole frame (and, for training images, of a few trimmed frames) and a 32x32 grey thumbnail of
each. A near copy is found in two steps: candidates whose pHash lies within `data.leak_distance` bits of a frame
of a training image, looked up by hash bands (with d bits allowed, d+1 bands guarantee a shared band, so there is
no all-pairs scan), then a check that the thumbnails agree in grey level, which tells a copy from a different
scan that only looks alike at 32 pixels. Thumbnails wait in an unnamed temporary file, not in memory.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import tempfile
import warnings
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from medrl.data.images import HIGH_BIT_MODES, window_8bit

THUMB = 32  # side of the grey thumbnail both the hash and the grey-level check use
THUMB_BYTES = THUMB * THUMB
WORK = 64  # side of the frame the trims are cut from (trims fall between pixels: the box weights are fractional)
HASH_BITS = 64
MAX_DISTANCE = 16  # more bits let distinct scans through to the grey check in bulk (slow, and no better)
# Trimmed frames hashed for training images, as (left, top, right, bottom) fractions: a test image cropped by
# up to ~6% a side lands within a pixel of one of them. Symmetric trims every 1.5%, one-sided ones at 4%.
TRIMS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.0, 0.0),
    *((a, a, a, a) for a in (0.015, 0.03, 0.045, 0.06)),
    (0.04, 0.0, 0.0, 0.0),
    (0.0, 0.04, 0.0, 0.0),
    (0.0, 0.0, 0.04, 0.0),
    (0.0, 0.0, 0.0, 0.04),
)
# Mean absolute grey difference (0-255) of two thumbnails, best of one-pixel shifts, at or below which a hash
# candidate is a copy. Measured on the synthetic generator's scans (tests/unit/test_leakage.py): JPEG, resized
# and cropped copies 0.1-2.3; distinct scans of the same kind from 3.0 apart at 128 px (1.5 at 56 px, where
# they are nearly the same picture).
GREY_TOLERANCE = 2.8
COARSE_TOLERANCE = 2 * GREY_TOLERANCE  # the same on 8x8 means, loose enough for a one-pixel shift at 32 px


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / n)


_DCT = _dct_matrix(THUMB)


def _box_matrix(start: float, stop: float, n_in: int = WORK, n_out: int = THUMB) -> np.ndarray:
    """(n_out, n_in) weights that average [start, stop) of n_in pixels into n_out cells by area (a box resize).

    >>> _box_matrix(0, 4, n_in=4, n_out=2).tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    edges = np.linspace(start, stop, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


# Each trimmed frame's thumbnail is ROWS[t] @ frame @ COLS[t]: all frames of an image in one batched product.
_ROWS = np.stack([_box_matrix(WORK * top, WORK * (1 - bottom)) for _, top, _, bottom in TRIMS])
_COLS = np.stack([_box_matrix(WORK * left, WORK * (1 - right)).T for left, _, right, _ in TRIMS])


def phashes(greys: np.ndarray) -> list[int]:
    """64-bit pHashes of a stack of THUMBxTHUMB grey arrays: the signs of the 8x8 lowest DCT frequencies (DC
    left out) against their median, so brightness and contrast do not move them.

    >>> scan = np.random.default_rng(0).random((32, 32)) * 100
    >>> a, b, c = phashes(np.stack([scan, scan * 2 + 10, scan[:, ::-1]]))
    >>> a == b, a == c
    (True, False)
    """
    coeffs = _DCT @ greys @ _DCT.T
    low = coeffs[:, :8, :8].reshape(len(greys), 64)[:, 1:]
    bits = np.concatenate([low > np.median(low, axis=1, keepdims=True), np.zeros((len(greys), 1), bool)], axis=1)
    return [int(v) for v in np.packbits(bits, axis=1).view(">u8").ravel()]


@dataclass(frozen=True)
class Fingerprint:
    """What the leak check keeps of one image: exact digests, the pHash and thumbnail of each frame."""

    data: bytes
    pixels: bytes
    hashes: tuple[int, ...]
    thumbs: bytes  # THUMB_BYTES per frame


def fingerprint(data: bytes, trims: bool = True) -> Fingerprint:
    """Fingerprint of an encoded image already checked by medrl.data.images; `trims` adds the trimmed frames
    (wanted for training images only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            pixels = hashlib.blake2b(repr((im.mode, im.size)).encode() + im.tobytes(), digest_size=16).digest()
            # convert("L") clips a 16-bit scan to white, and distinct white frames would all be "copies": window it as
            # prep does (images.to_8bit) before the prepared image is written
            grey = window_8bit(im) if im.mode in HIGH_BIT_MODES else im.convert("L")
            frame = grey.resize((WORK, WORK), Image.Resampling.BOX)
    n = len(TRIMS) if trims else 1
    greys = _ROWS[:n] @ np.asarray(frame, dtype=np.float64) @ _COLS[:n]
    thumbs = np.clip(np.rint(greys), 0, 255).astype(np.uint8).tobytes()
    return Fingerprint(hashlib.blake2b(data, digest_size=16).digest(), pixels, tuple(phashes(greys)), thumbs)


def _smooth(a: np.ndarray) -> np.ndarray:
    """3x3 box blur (edges repeated): a sub-pixel misalignment of sharp edges then costs little."""
    padded = np.pad(a, 1, mode="edge")
    # Started at zeros of a's dtype, not at 0: the same sums, typed as an array
    total = sum(
        (padded[dy : dy + a.shape[0], dx : dx + a.shape[1]] for dy in range(3) for dx in range(3)), np.zeros_like(a)
    )
    return total / 9


def grey_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey difference of two thumbnails, smoothed, best over shifts of up to one pixel (a crop
    that falls between two trimmed frames), the two-pixel border left out.

    >>> x = np.arange(1024, dtype=np.float32).reshape(32, 32) % 97
    >>> grey_difference(x, np.roll(x, 1, axis=1)), grey_difference(np.zeros((32, 32)), np.full((32, 32), 10.0))
    (0.0, 10.0)
    """
    inner = (slice(2, -2), slice(2, -2))
    a, b = _smooth(a), _smooth(b)
    return min(
        float(np.abs(np.roll(a, (dy, dx), axis=(0, 1))[inner] - b[inner]).mean())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


class Prints:
    """Fingerprints of the rows of one split, in spill order; each row has one or more images."""

    def __init__(self) -> None:
        self.digests: list[bytes] = []  # data digest, pixel digest of each image, in turn
        self.hashes = array("Q")
        self.frames = array("q")  # first frame of each image
        self.images = array("q", [0])  # first image of each row
        self.questions = array("Q")
        self.coarse = bytearray()  # 8x8 means of each frame's thumbnail: the grey check's first, cheap pass
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the split; close() ends it

    def __len__(self) -> int:
        return len(self.questions)

    def add(self, prints: Sequence[Fingerprint], question: int) -> None:
        for fp in prints:
            self.frames.append(len(self.hashes))
            self.digests += (fp.data, fp.pixels)
            self.hashes.extend(fp.hashes)
            self.file.write(fp.thumbs)
            frames = np.frombuffer(fp.thumbs, dtype=np.uint8).reshape(-1, 8, 4, 8, 4).astype(np.float32)
            self.coarse += frames.mean(axis=(2, 4)).round().astype(np.uint8).tobytes()
        self.images.append(len(self.frames))
        self.questions.append(question)

    def thumb(self, frame: int) -> np.ndarray:
        raw = os.pread(self.file.fileno(), THUMB_BYTES, frame * THUMB_BYTES)
        return np.frombuffer(raw, dtype=np.uint8).reshape(THUMB, THUMB).astype(np.float32)

    def close(self) -> None:
        self.file.close()


def _bands(distance: int) -> list[tuple[int, int]]:
    """(shift, mask) of `distance + 1` bands covering the 64 bits: two hashes within `distance` bits agree
    exactly on at least one band (pigeonhole).

    >>> [(s, bin(m).count("1")) for s, m in _bands(3)]
    [(0, 16), (16, 16), (32, 16), (48, 16)]
    """
    n = distance + 1
    edges = [round(i * HASH_BITS / n) for i in range(n + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(edges)]


def check_distance(distance: int) -> None:
    if not 0 <= distance <= MAX_DISTANCE:
        raise ValueError(f"data.leak_distance={distance}: give 0..{MAX_DISTANCE} bits (of {HASH_BITS}); default 8")


def find_leaks(train: Prints, test: Prints, distance: int, same_question: bool = False) -> list[int]:
    """Positions of the test rows one of whose images copies a training image (`same_question`: only where a
    training row asks the same question of that image)."""
    check_distance(distance)
    train.file.flush()
    test.file.flush()
    first_images = np.frombuffer(train.images, np.int64)  # apart: read inside diff, numpy's stubs infer timedelta64
    image_row = np.repeat(np.arange(len(train), dtype=np.int64), np.diff(first_images))
    frame_image = np.repeat(
        np.arange(len(train.frames), dtype=np.int64),
        np.diff(np.append(np.frombuffer(train.frames, np.int64), len(train.hashes))),
    )
    exact: dict[bytes, int] = {}
    for i, digest in enumerate(train.digests):
        exact.setdefault(digest, i // 2)
    # an image's identity: the first training image with its bytes, so that copies share one
    canon = np.array([exact[train.digests[2 * i]] for i in range(len(train.frames))], dtype=np.int64)
    asked = {(int(canon[i]), train.questions[int(image_row[i])]) for i in range(len(canon))} if same_question else None

    values = np.frombuffer(train.hashes, dtype=np.uint64)
    coarse = np.frombuffer(bytes(train.coarse), dtype=np.uint8).reshape(-1, 8, 8).astype(np.float32)
    # per band: training frames sorted by the band's bits, and where each test image's bits start and end there
    test_values = np.frombuffer(test.hashes, dtype=np.uint64)[np.frombuffer(test.frames, dtype=np.int64)]
    tables = []
    for shift, mask in _bands(distance):
        keys = (values >> np.uint64(shift)) & np.uint64(mask)
        order = np.argsort(keys, kind="stable")
        wanted = (test_values >> np.uint64(shift)) & np.uint64(mask)
        sorted_keys = keys[order]
        tables.append(
            (order, np.searchsorted(sorted_keys, wanted, "left"), np.searchsorted(sorted_keys, wanted, "right"))
        )

    def match(image: int) -> list[int]:
        """Training images the test image copies (the first exact hit, else near ones that pass the grey check)."""
        for digest in test.digests[2 * image : 2 * image + 2]:
            if digest in exact:
                return [exact[digest]]
        frame = test.frames[image]
        value = test.hashes[frame]
        found = [order[lo[image] : hi[image]] for order, lo, hi in tables]
        cands = np.concatenate(found)  # a frame found by several bands repeats: cheaper than a unique() here
        cands = np.unique(cands[np.bitwise_count(values[cands] ^ np.uint64(value)) <= distance])
        if not len(cands):
            return []
        # first pass on the 8x8 means, all candidates at once: a one-pixel shift at 32 px moves them little
        mine_coarse = np.frombuffer(bytes(test.coarse[frame * 64 : frame * 64 + 64]), np.uint8).astype(np.float32)
        spread = np.abs(coarse[cands].reshape(len(cands), 64) - mine_coarse).mean(axis=1)
        cands = cands[spread <= COARSE_TOLERANCE]
        mine = test.thumb(frame)
        hits = [int(frame_image[c]) for c in cands if grey_difference(mine, train.thumb(int(c))) <= GREY_TOLERANCE]
        return sorted(set(hits))

    leaks = []
    for row in range(len(test)):
        for image in range(test.images[row], test.images[row + 1]):
            hits = match(image)
            if asked is None and hits:
                break
            if asked is not None and any((int(canon[h]), test.questions[row]) in asked for h in hits):
                break
        else:
            continue
        leaks.append(row)
    return leaks
