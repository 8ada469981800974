"""Synthetic 'scans' whose answer is visible in the image. Two questions, chosen by `data.synthetic_task`:

- location: one bright lesion in one quadrant of a body outline; where is it?
- count: one to four lesions, each in its own quadrant; how many are there? With faint lesions
  (`data.lesion_brightness` near the tissue's grey) the count is hard to read off a 56-pixel image, which is
  what leaves a short SFT run room for GRPO to improve on (tests/benchmarks/demo_calibration.md).

Small enough for a 0.2M-parameter model to learn in a minute on a CPU; four options, so chance is 0.25.
With 56x56 images and Qwen2-VL's 14-pixel patches merged 2x2, each image quadrant is one visual token.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from medrl.data.records import LETTERS, Record

TASKS = ("location", "count")
QUADRANTS = ["upper left", "upper right", "lower left", "lower right"]
COUNTS = ["one", "two", "three", "four"]
MODALITIES = ["CT", "MRI", "X-ray"]
QUESTIONS = {
    "location": [
        "Where is the lesion located in this {modality} image?",
        "In which region of the {modality} scan is the bright lesion?",
        "Which part of this {modality} image shows the abnormality?",
    ],
    "count": [
        "How many lesions are visible in this {modality} image?",
        "How many bright lesions does the {modality} scan show?",
        "Count the lesions in this {modality} image.",
    ],
}


def draw_scan(
    quadrants: list[int], modality: str, size: int, rng: random.Random, brightness: tuple[int, int] = (200, 255)
) -> Image.Image:
    """A dark field, a grey body outline shaped by the modality, and one lesion in each of `quadrants`."""
    img = Image.new("L", (size, size), rng.randint(0, 25))
    d = ImageDraw.Draw(img)
    m = size // 14
    tissue = rng.randint(60, 100)
    if modality == "X-ray":
        d.rounded_rectangle([m, m, size - m, size - m], radius=size // 5, fill=tissue)
    elif modality == "CT":
        d.ellipse([m, m, size - m, size - m], fill=tissue)
    else:
        d.ellipse([m, m * 2, size - m, size - m * 2], fill=tissue)
    half = size // 2
    for quadrant in quadrants:
        r = rng.randint(max(3, size // 7), max(4, size // 5))
        col, row = quadrant % 2, quadrant // 2
        cx = col * half + rng.randint(r + 1, half - r - 2)
        cy = row * half + rng.randint(r + 1, half - r - 2)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rng.randint(*brightness))
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    return img.convert("RGB")


def generate(
    n: int,
    out_dir: Path,
    seed: int,
    size: int,
    first_id: int = 0,
    task: str = "location",
    brightness: tuple[int, int] = (200, 255),
) -> Iterator[Record]:
    """`n` records with their PNG files under `out_dir/images/`; paths in records are relative to `out_dir`."""
    if task not in TASKS:
        raise ValueError(f"data.synthetic_task is {task!r}: use one of {', '.join(TASKS)}")
    rng = random.Random(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    options = QUADRANTS if task == "location" else COUNTS
    for i in range(first_id, first_id + n):
        target = i % 4 if rng.random() < 0.5 else rng.randrange(4)
        modality = rng.choice(MODALITIES)
        quadrants = [target] if task == "location" else rng.sample(range(4), target + 1)
        rel = f"images/syn-{i:06d}.png"
        draw_scan(quadrants, modality, size, rng, brightness).save(out_dir / rel)
        choices = options[:]
        rng.shuffle(choices)
        answer = options[target]
        if task == "location":
            rationale = f"The bright round lesion lies in the {answer} part of the {modality} image."
        else:
            rationale = f"The {modality} image shows {answer} round lesion{'s' if target else ''}."
        yield Record(
            id=f"syn-{i:06d}",
            image=rel,
            question=rng.choice(QUESTIONS[task]).format(modality=modality),
            choices=choices,
            answer=answer,
            answer_label=LETTERS[choices.index(answer)],
            source="synthetic",
            meta={"modality": modality, "rationale": rationale},
        )
