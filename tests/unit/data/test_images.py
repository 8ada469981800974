"""Image depth and size at prep (src/medrl/data/images.py): high-bit-depth scans windowed into 8 bits once, with
their structure kept; readers refuse what prep did not convert; images too small for the model quarantined."""

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from transformers.image_transforms import convert_to_rgb

from medrl.config import DataConfig, load_config
from medrl.data.images import MIN_IMAGE_SIDE, ImageDepthError, check_image, open_rgb, window_8bit
from medrl.data.prep import prepare
from medrl.data.records import read_records
from medrl.evaluate.generate import _image
from medrl.train.common import vision_dataset
from tests.support.medvqa_fixtures import image_bytes


def scan(lo: int = 0, hi: int = 65535, side: int = 96) -> np.ndarray:
    """A 16-bit scan with structure over the full range: a diagonal gradient, two bright blobs and a dark one."""
    y, x = np.mgrid[0:side, 0:side] / (side - 1)
    field = 0.35 * (x + y) / 2
    for cy, cx, r, amp in ((0.3, 0.3, 0.12, 0.6), (0.7, 0.6, 0.08, 0.65), (0.6, 0.2, 0.1, -0.3)):
        field += amp * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))
    field = (field - field.min()) / (field.max() - field.min())
    return np.round(lo + field * (hi - lo))


def save_scan(path, arr: np.ndarray, mode: str, fmt: str) -> None:
    if mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16))
    elif mode == "I;16B":
        im = Image.frombytes("I;16B", arr.shape[::-1], arr.astype(">u2").tobytes())
    elif mode == "I":
        im = Image.fromarray(arr.astype(np.int32) * 1000 - 2**30)  # a 32-bit range, negative values too
    else:
        im = Image.fromarray(arr.astype(np.float32) / 6553.5 - 3.0)  # float: e.g. -3.0 .. 7.0
    assert im.mode == mode
    im.save(path, format=fmt)


def jsonl_dataset(root, images: dict[str, str]) -> None:
    """A `jsonl` source: one multiple-choice record per image."""
    lines = []
    for i, (name, split) in enumerate(images.items()):
        rec = {"id": f"r{i}", "image": name, "question": f"Which side? ({i})", "choices": ["left", "right"]}
        lines.append(json.dumps({**rec, "answer": "left", "answer_label": "A", "split": split}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")


def correlation(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel())[0, 1])


@pytest.mark.parametrize(
    ("mode", "fmt", "name"),
    [("I;16", "PNG", "scan.png"), ("I;16B", "TIFF", "scan.tif"), ("I", "TIFF", "scan32.tif"), ("F", "TIFF", "f.tif")],
)
def test_a_high_bit_depth_scan_is_windowed_into_8_bits_once_at_prep_and_keeps_its_structure(tmp_path, mode, fmt, name):
    src = tmp_path / "src"
    src.mkdir()
    original = scan()
    save_scan(src / name, original, mode, fmt)
    (src / "plain.png").write_bytes(image_bytes(3, "PNG", size=(64, 64)))
    jsonl_dataset(src, {name: "train", "plain.png": "test"})
    out = tmp_path / "out"
    summary = prepare(DataConfig(source="jsonl", input=str(src / "data.jsonl"), image_formats=["PNG", "TIFF"]), out)
    assert summary["train"] == 1 and summary["images_windowed"] == 1
    [rec] = read_records(out, "train")
    with Image.open(out / rec.image) as im:
        assert im.mode == "L" and im.format == fmt and im.size == (96, 96)
        # what every reader does with it (TRL's collator, the processor, evaluation): convert to RGB
        seen = np.asarray(im.convert("RGB"))[..., 0]
    assert seen.min() == 0 and seen.max() == 255  # the full range min..max spread over 0..255
    assert (seen == 255).mean() < 0.02  # not a white picture (today's clipping: ~99 % white)
    assert correlation(seen, original) > 0.999  # observed 0.99999: linear, so the structure is kept
    # an 8-bit image is copied byte for byte
    [plain] = read_records(out, "test")
    assert (out / plain.image).read_bytes() == (src / "plain.png").read_bytes()


def test_the_window_is_the_full_range_of_the_pixels_not_of_the_type(tmp_path):
    """A 12-bit detector in a 16-bit file (values 0..4095) uses the whole 8-bit range, not 1/16 of it."""
    original = scan(0, 4095)
    out = np.asarray(window_8bit(Image.fromarray(original.astype(np.uint16))))
    assert out.min() == 0 and out.max() == 255 and correlation(out, original) > 0.999
    assert np.asarray(window_8bit(Image.fromarray(np.full((40, 40), 700, np.uint16)))).max() == 0  # flat: black


def test_readers_refuse_a_16_bit_image_prep_did_not_convert(tmp_path):
    """A dataset prepared before prep windowed images (or written by hand): evaluation and training stop with
    the fix, rather than feed the model a white picture."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    save_scan(data / "images" / "patient-4711.png", scan(), "I;16", "PNG")
    rec = {"id": "r", "image": "images/patient-4711.png", "question": "Which side?", "choices": ["left", "right"]}
    rec |= {"answer": "left", "answer_label": "A"}
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text(json.dumps({**rec, "split": split}) + "\n")
    with pytest.raises(ImageDepthError, match=r"more than 8 bits.*mode I;16.*medrl prep") as err:
        _image(data, "images/patient-4711.png")
    assert "patient-4711" not in str(err.value)  # no image path in a message that leaves the process
    with pytest.raises(ImageDepthError, match=r"image 1 of the train split.*medrl prep"):
        vision_dataset(load_config(preset="demo"), data, "train")
    with pytest.raises(ImageDepthError):
        open_rgb(data / "images" / "patient-4711.png")


def test_an_8_bit_image_reads_as_it_is(tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes(5, "PNG", size=(64, 64), mode="L"))
    with Image.open(tmp_path / "a.png") as im:
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "a.png")), expected)


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ((1, 1), "image_too_small"),
        ((MIN_IMAGE_SIDE - 1, 200), "image_too_small"),
        ((MIN_IMAGE_SIDE, MIN_IMAGE_SIDE), None),
        ((6000, 29), "image_aspect_ratio"),  # Qwen2-VL's processor refuses a ratio above 200
    ],
)
def test_images_too_small_for_the_model_are_quarantined(tmp_path, size, reason):
    Image.new("L", size, 90).save(tmp_path / "x.png")
    assert check_image(tmp_path, "x.png") == reason


def test_a_1x1_image_is_quarantined_at_prep_with_its_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (1, 1)).save(src / "dot.png")
    for i in range(3):
        (src / f"ok{i}.png").write_bytes(image_bytes(i, "PNG", size=(64, 64)))
    jsonl_dataset(src, {"dot.png": "train", "ok0.png": "train", "ok1.png": "train", "ok2.png": "test"})
    summary = prepare(DataConfig(source="jsonl", input=str(src / "data.jsonl"), max_bad_fraction=0.5), tmp_path / "o")
    assert summary["reasons"] == {"image_too_small": 1} and summary["train"] == 2


def test_evaluation_sees_an_exif_rotated_photo_as_training_does(tmp_path):
    """A JPEG stored sideways with an EXIF orientation (a phone photo of a slide or a film): training decodes it
    through datasets' Image feature, which turns it upright; evaluation read it on its side."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    pixels = np.zeros((40, 90, 3), np.uint8)
    pixels[:, :30] = 255  # a bright band on the left of the stored frame
    photo = Image.fromarray(pixels)
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    photo.save(data / "images" / "photo.jpg", exif=exif, quality=95)
    rec = {"id": "r", "image": "images/photo.jpg", "question": "Which side?", "choices": ["left", "right"]}
    rec |= {"answer": "left", "answer_label": "A"}
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text(json.dumps({**rec, "split": split}) + "\n")
    trained = np.asarray(vision_dataset(load_config(preset="demo"), data, "train")[0]["image"].convert("RGB"))
    evaluated = np.asarray(_image(data, "images/photo.jpg"))
    assert trained.shape == (90, 40, 3)  # upright: the band is now on top
    assert evaluated.shape == trained.shape and np.abs(evaluated.astype(int) - trained).max() <= 1


def _white_is_zero(path, arr: np.ndarray) -> None:
    """Save `arr` as a TIFF whose photometric interpretation is WhiteIsZero (0: the smallest value is white)."""
    Image.fromarray(arr).save(path)
    data = bytearray(path.read_bytes())
    ifd = int.from_bytes(data[4:8], "little")
    for i in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(data[entry : entry + 2], "little") == 262:
            data[entry + 8 : entry + 10] = (0).to_bytes(2, "little")
    path.write_bytes(data)


def test_a_16_bit_white_is_zero_tiff_keeps_its_white_where_the_file_says(tmp_path):
    """Pillow inverts an 8-bit WhiteIsZero TIFF as it decodes it but hands a 16-bit one over as stored: windowed
    as stored, the prepared scan was a negative (bone black)."""
    src = tmp_path / "src"
    src.mkdir()
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 1000, (64, 1))  # 0 (white in this file) on the left
    _white_is_zero(src / "scan.tif", ramp)
    _white_is_zero(src / "scan8.tif", (ramp // 257).astype(np.uint8))
    with Image.open(src / "scan8.tif") as im:
        assert np.asarray(im)[0, 0] > np.asarray(im)[0, -1]  # Pillow's own reading of the 8-bit file: white left
    jsonl_dataset(src, {"scan.tif": "train", "scan8.tif": "test"})
    out = tmp_path / "out"
    prepare(DataConfig(source="jsonl", input=str(src / "data.jsonl"), image_formats=["TIFF"], leak_check="off"), out)
    [rec] = read_records(out, "train")
    seen = np.asarray(open_rgb(out / rec.image))[..., 0]
    assert seen[0, 0] == 255 and seen[0, -1] == 0


def _transparent_figure(mode: str) -> Image.Image:
    """A figure as a paper's PNG holds it: a transparent background (black beneath) and opaque black lettering."""
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[10:30, 10:50, 3] = 255  # the lettering: opaque black; the rest transparent black
    im = Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        return im.convert("LA")
    if mode == "P":
        p = Image.fromarray(np.where(rgba[..., 3] > 0, 1, 0).astype(np.uint8), "P")
        p.putpalette([0, 0, 0, 0, 0, 0])
        p.info["transparency"] = 0
        return p
    return im


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_evaluation_puts_transparency_on_white_as_training_does(tmp_path, mode):
    """Training hands the decoded image to the processor, which composites transparency onto white; evaluation's
    convert("RGB") showed the black beneath it, so the lettering vanished into a black figure."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    _transparent_figure(mode).save(data / "images" / "fig.png")
    rec = {"id": "r", "image": "images/fig.png", "question": "What is shown?", "choices": ["a", "b"]}
    rec |= {"answer": "a", "answer_label": "A"}
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text(json.dumps({**rec, "split": split}) + "\n")
    decoded = vision_dataset(load_config(preset="demo"), data, "train")[0]["image"]
    trained = convert_to_rgb(decoded, return_numpy=True)  # what the processor makes of it
    evaluated = np.asarray(_image(data, "images/fig.png"))
    assert trained[0, 0].tolist() == [255, 255, 255]  # the background, on white
    assert np.array_equal(evaluated, trained)


def png_16bit(path, samples: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written byte by byte (Pillow writes 16-bit greyscale only)."""
    height, width = samples.shape[:2]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("colour_type", "channels"), [(2, 3), (4, 2), (6, 4)])
def test_a_16_bit_colour_png_is_quarantined_not_read_almost_black(tmp_path, colour_type, channels):
    """12-bit data in a 16-bit RGB, grey+alpha or RGBA PNG: Pillow would keep the high byte, 0..15 of 255."""
    samples = np.full((64, 64, channels), 4095, dtype=np.uint16)
    png_16bit(tmp_path / "x.png", samples, colour_type)
    with Image.open(tmp_path / "x.png") as im:
        assert np.asarray(im.convert("RGB")).max() <= 16  # what reading it would have given
    assert check_image(tmp_path, "x.png") == "image_16bit_colour"
    png_16bit(tmp_path / "grey.png", samples[..., 0], 0)  # 16-bit grey: windowed, as before
    assert check_image(tmp_path, "grey.png") is None
