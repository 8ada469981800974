"""Leak check of prep (medrl.data.leakage): copies of training images leave the test split, distinct scans stay."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from medrl.config import DataConfig
from medrl.data import leakage
from medrl.data.images import window_8bit
from medrl.data.prep import prepare
from medrl.data.synthetic import draw_scan

SIZE = 128  # the look-alikes below are told apart from copies at this size (GREY_TOLERANCE's measurement)


def scans(n: int, seed: int) -> list[Image.Image]:
    """Distinct scans of one kind: same modality, one lesion in the same quadrant (the generator's look-alikes)."""
    rng = random.Random(seed)
    return [draw_scan([0], "CT", SIZE, rng) for _ in range(n)]


def encoded(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def copies(im: Image.Image) -> dict[str, bytes]:
    w, h = im.size
    c3, c5 = round(w * 0.03), round(w * 0.05)
    return {
        "same bytes": encoded(im),
        "png re-saved as jpeg": encoded(im, "JPEG", quality=70),
        "enlarged": encoded(im.resize((w * 3, h * 3), Image.Resampling.BICUBIC)),
        "shrunk": encoded(im.resize((w * 3 // 4, h * 3 // 4))),
        "3% cropped": encoded(im.crop((c3, c3, w - c3, h - c3))),
        "5% cropped": encoded(im.crop((c5, c5, w - c5, h - c5))),
        "5% cut off one side": encoded(im.crop((c5, 0, w, h))),
        "cropped, enlarged, jpeg": encoded(im.crop((c3, c3, w - c3, h - c3)).resize((300, 300)), "JPEG", quality=85),
    }


def prints(images: list[bytes], trims: bool) -> leakage.Prints:
    store = leakage.Prints()
    for i, data in enumerate(images):
        store.add([leakage.fingerprint(data, trims=trims)], question=i)
    return store


@pytest.fixture(scope="module")
def train_scans() -> list[Image.Image]:
    return scans(40, seed=1)


def test_copies_of_training_images_are_leaks(train_scans):
    train = prints([encoded(im) for im in train_scans], trims=True)
    missed = []
    for i in (0, 7, 19, 33):
        for name, data in copies(train_scans[i]).items():
            if leakage.find_leaks(train, prints([data], trims=False), distance=8) != [0]:
                missed.append(f"{name} of scan {i}")
    assert missed == []


def test_look_alike_distinct_scans_are_not_leaks(train_scans):
    train = prints([encoded(im) for im in train_scans], trims=True)
    test = prints([encoded(im) for im in scans(80, seed=2)], trims=False)
    assert leakage.find_leaks(train, test, distance=8) == []
    # ... and not because nothing was compared: their hashes do come within reach of the training scans'
    near = [
        min((a ^ b).bit_count() for a in train.hashes) for b in (test.hashes[test.frames[i]] for i in range(len(test)))
    ]
    assert min(near) <= 8


def test_same_question_mode_keeps_a_shared_image_asked_something_else(train_scans):
    train = leakage.Prints()
    train.add([leakage.fingerprint(encoded(train_scans[0]))], question=11)
    test = leakage.Prints()
    jpeg = leakage.fingerprint(encoded(train_scans[0], "JPEG"), trims=False)
    test.add([jpeg], question=11)  # same image, same question: a leak
    test.add([jpeg], question=12)  # same image, another question: kept in this mode
    assert leakage.find_leaks(train, test, distance=8, same_question=True) == [0]
    assert leakage.find_leaks(train, test, distance=8) == [0, 1]


@pytest.mark.parametrize("distance", [-1, 17])
def test_leak_distance_outside_its_range_is_refused(distance):
    with pytest.raises(ValueError, match=r"data.leak_distance=.*0\.\.16"):
        DataConfig(leak_distance=distance)


def _jsonl_source(tmp_path, train_scans):
    """A jsonl source: 12 training scans; test rows: 3 copies of training scans (JPEG, resized, cropped), one
    training question asked again of its very image file, and 6 distinct scans."""
    root = tmp_path / "src"
    (root / "img").mkdir(parents=True)
    rows = []

    def row(i, split, image, data, question="How many lesions are visible?"):
        (root / "img" / image).write_bytes(data) if data is not None else None
        rows.append(
            {
                "id": f"r{i}",
                "image": f"img/{image}",
                "question": question,
                "choices": ["one", "two"],
                "answer": "one",
                "answer_label": "A",
                "split": split,
            }
        )

    for i, im in enumerate(train_scans[:12]):
        row(i, "train", f"train{i}.png", encoded(im))
    w = SIZE
    row(100, "test", "leak-jpeg.jpg", encoded(train_scans[2], "JPEG", quality=80))
    row(101, "test", "leak-resized.png", encoded(train_scans[5].resize((200, 200))))
    row(102, "test", "leak-cropped.png", encoded(train_scans[8].crop((5, 5, w - 5, w - 5))))
    row(103, "test", "train3.png", None, question="Is there a lesion?")  # the training file itself
    for i, im in enumerate(scans(6, seed=5)):
        row(200 + i, "test", f"new{i}.png", encoded(im))
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "data.jsonl"


def test_prep_quarantines_leaks_and_counts_them(tmp_path, train_scans):
    src = _jsonl_source(tmp_path, train_scans)
    summary = prepare(DataConfig(source="jsonl", input=str(src), train_size=None, test_size=None), tmp_path / "out")
    assert (summary["train"], summary["test"]) == (12, 6)
    assert summary["reasons"] == {"leak": 4} and summary["outcomes"]["leak"] == 4 and summary["outcomes"]["bad"] == 0
    assert summary["leak_check"] == {"mode": "image", "distance": 8, "leaked": 4}
    test_ids = {json.loads(x)["id"] for x in (tmp_path / "out" / "test.jsonl").read_text().splitlines()}
    assert test_ids == {f"r{200 + i}" for i in range(6)}
    quarantined = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(q["source_row"] for q in quarantined) == [13, 14, 15, 16] and {q["reason"] for q in quarantined} == {
        "leak"
    }


def test_prep_leak_modes(tmp_path, train_scans):
    src = _jsonl_source(tmp_path, train_scans)
    off = prepare(
        DataConfig(source="jsonl", input=str(src), train_size=None, test_size=None, leak_check="off"), tmp_path / "a"
    )
    assert off["test"] == 10 and off["outcomes"]["leak"] == 0
    # image_question: the copies ask the training question of the training image; the reused file asks another
    asked = prepare(
        DataConfig(source="jsonl", input=str(src), train_size=None, test_size=None, leak_check="image_question"),
        tmp_path / "b",
    )
    assert asked["test"] == 7 and asked["outcomes"]["leak"] == 3


def test_a_bare_yaml_off_turns_the_check_off():
    assert DataConfig.model_validate({"leak_check": False}).leak_check == "off"  # YAML reads `off` as false


def sixteen_bit(im: Image.Image) -> Image.Image:
    """A scan as a 12-bit CT stores it: 16-bit grey values 1000..4060, every one above 8 bits."""
    return Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 12 + 1000)


def test_16_bit_scans_are_compared_as_prep_windows_them(train_scans):
    # convert("L") clipped every such scan to a white frame: all 80 distinct test scans were "leaks" (observed 80)
    train = prints([encoded(sixteen_bit(im)) for im in train_scans], trims=True)
    test = prints([encoded(sixteen_bit(im)) for im in scans(80, seed=2)], trims=False)
    found = leakage.find_leaks(train, test, distance=8)
    # the same verdicts as for the 8-bit pictures prep writes (window_8bit stretches each scan's own range, which
    # brings one look-alike pair within the grey tolerance: observed [39])
    windowed = [encoded(window_8bit(sixteen_bit(im))) for im in train_scans]
    expected = leakage.find_leaks(
        prints(windowed, trims=True),
        prints([encoded(window_8bit(sixteen_bit(im))) for im in scans(80, seed=2)], trims=False),
        distance=8,
    )
    assert found == expected and len(found) <= 2
    copy = sixteen_bit(train_scans[7]).resize((200, 200), Image.Resampling.BILINEAR)
    assert leakage.find_leaks(train, prints([encoded(copy)], trims=False), distance=8) == [0]
