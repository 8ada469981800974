"""Synthetic 'scans' whose answer is visible: one bright lesion in one quadrant of a body outline.

Small enough for a 0.2M-parameter model to learn in a minute on a CPU; four options, so chance is 0.25.
With 56x56 images and Qwen2-VL's 14-pixel patches merged 2x2, each image quadrant is one visual token.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from medrl.data.records import LETTERS, Record

QUADRANTS = ["upper left", "upper right", "lower left", "lower right"]
MODALITIES = ["CT", "MRI", "X-ray"]
QUESTIONS = [
    "Where is the lesion located in this {modality} image?",
    "In which region of the {modality} scan is the bright lesion?",
    "Which part of this {modality} image shows the abnormality?",
]


def draw_scan(quadrant: int, modality: str, size: int, rng: random.Random) -> Image.Image:
    """A dark field, a grey body outline shaped by the modality, and one bright lesion in `quadrant`."""
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
    r = rng.randint(max(3, size // 7), max(4, size // 5))
    col, row = quadrant % 2, quadrant // 2
    cx = col * half + rng.randint(r + 1, half - r - 2)
    cy = row * half + rng.randint(r + 1, half - r - 2)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rng.randint(200, 255))
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    return img.convert("RGB")


def generate(n: int, out_dir: Path, seed: int, size: int, first_id: int = 0) -> Iterator[Record]:
    """`n` records with their PNG files under `out_dir/images/`; paths in records are relative to `out_dir`."""
    rng = random.Random(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for i in range(first_id, first_id + n):
        quadrant = i % 4 if rng.random() < 0.5 else rng.randrange(4)
        modality = rng.choice(MODALITIES)
        rel = f"images/syn-{i:06d}.png"
        draw_scan(quadrant, modality, size, rng).save(out_dir / rel)
        choices = QUADRANTS[:]
        rng.shuffle(choices)
        answer = QUADRANTS[quadrant]
        yield Record(
            id=f"syn-{i:06d}",
            image=rel,
            question=rng.choice(QUESTIONS).format(modality=modality),
            choices=choices,
            answer=answer,
            answer_label=LETTERS[choices.index(answer)],
            source="synthetic",
            meta={
                "modality": modality,
                "rationale": f"The bright round lesion lies in the {answer} part of the {modality} image.",
            },
        )
