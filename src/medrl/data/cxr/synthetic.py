"""`cxr-synthetic`: chest-X-ray-like images with known findings, their boxes, and reports written from the
known labels, so that report and grounding training run end to end without credentialed data.

Each image is a body outline with two dark lung fields, a heart and a spine; findings (nodule, consolidation,
pleural effusion, pneumothorax, cardiomegaly) are drawn where their boxes say. Sides follow the radiological
convention: the patient's right lung is on the left of the image.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from medrl.config import DataConfig
from medrl.data.cxr.common import grounding_record, report_record
from medrl.data.sources import Row

SOURCE = "cxr-synthetic"
# Lung fields as [x1, y1, x2, y2] in 0..1; "right" is the patient's right, on the left of the image.
LUNGS = {"right": (0.12, 0.12, 0.44, 0.84), "left": (0.56, 0.12, 0.88, 0.84)}
KINDS = ["nodule", "consolidation", "pleural effusion", "pneumothorax", "cardiomegaly"]
OBSERVATION = {
    "nodule": "Lung Lesion",
    "consolidation": "Consolidation",
    "pleural effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
}


@dataclass
class Finding:
    kind: str
    side: str  # right | left | "" (heart)
    zone: str  # upper | lower | ""
    box: list[float]

    @property
    def phrase(self) -> str:
        if self.kind == "cardiomegaly":
            return "the enlarged cardiac silhouette"
        if self.kind in ("pleural effusion", "pneumothorax"):
            return f"the {self.side} {self.kind}"
        return f"the {self.kind} in the {self.side} {self.zone} lung"

    @property
    def sentence(self) -> str:
        return {
            "nodule": f"There is a small nodule in the {self.side} {self.zone} lung.",
            "consolidation": f"There is consolidation in the {self.side} {self.zone} lung.",
            "pleural effusion": f"There is a {self.side} pleural effusion.",
            "pneumothorax": f"There is a {self.side} pneumothorax.",
            "cardiomegaly": "The heart is enlarged.",
        }[self.kind]

    @property
    def impression(self) -> str:
        if self.kind == "cardiomegaly":
            return "Cardiomegaly."
        if self.zone:
            return f"{self.side.capitalize()} {self.zone} lung {self.kind}."
        return f"{self.side.capitalize()} {self.kind}."

    @property
    def trace(self) -> str:
        """What a reader sees, for the reasoning traces of the cold-start thinking SFT."""
        where = "on the left of the image" if self.side == "right" else "on the right of the image"
        return {
            "nodule": f"A small round bright focus lies in the {self.zone} zone of the {self.side} lung, {where}.",
            "consolidation": f"A patchy bright area fills the {self.zone} zone of the {self.side} lung, {where}.",
            "pleural effusion": f"The base of the {self.side} lung is white and the costophrenic angle is lost.",
            "pneumothorax": f"The apex of the {self.side} lung is black with no lung markings.",
            "cardiomegaly": "The cardiac silhouette is wider than half of the chest.",
        }[self.kind]


def _jitter(rng: random.Random, amount: float = 0.03) -> float:
    return rng.uniform(-amount, amount)


def make_finding(kind: str, rng: random.Random) -> Finding:
    side = rng.choice(["right", "left"])
    x1, y1, x2, y2 = LUNGS[side]
    cx = (x1 + x2) / 2 + _jitter(rng)
    if kind == "nodule":
        zone = rng.choice(["upper", "lower"])
        cy = (0.32 if zone == "upper" else 0.62) + _jitter(rng)
        r = rng.uniform(0.05, 0.07)
        return Finding(kind, side, zone, [cx - r, cy - r, cx + r, cy + r])
    if kind == "consolidation":
        zone = rng.choice(["upper", "lower"])
        cy = (0.32 if zone == "upper" else 0.62) + _jitter(rng)
        w, h = rng.uniform(0.09, 0.12), rng.uniform(0.08, 0.11)
        return Finding(kind, side, zone, [cx - w, cy - h, cx + w, cy + h])
    if kind == "pleural effusion":
        top = rng.uniform(0.64, 0.70)
        return Finding(kind, side, "", [x1, top, x2, y2])
    if kind == "pneumothorax":
        bottom = rng.uniform(0.30, 0.36)
        return Finding(kind, side, "", [x1 + 0.02, y1, x2 - 0.02, bottom])
    w = rng.uniform(0.20, 0.24)  # cardiomegaly: the heart's half-width (normal: about 0.13)
    return Finding(kind, "", "", [0.52 - w, 0.50, 0.52 + w, 0.84])


def draw_chest(findings: list[Finding], size: int, rng: random.Random) -> Image.Image:
    img = Image.new("L", (size, size), rng.randint(0, 20))
    d = ImageDraw.Draw(img)

    def px(box):
        return [round(v * (size - 1)) for v in box]

    d.rounded_rectangle(px([0.04, 0.04, 0.96, 0.99]), radius=max(2, size // 6), fill=rng.randint(110, 140))
    for box in LUNGS.values():
        d.ellipse(px(box), fill=rng.randint(35, 60))
    d.rectangle(px([0.47, 0.04, 0.53, 0.99]), fill=rng.randint(160, 185))  # spine
    heart = next((f.box for f in findings if f.kind == "cardiomegaly"), [0.39, 0.52, 0.65, 0.82])
    d.ellipse(px(heart), fill=rng.randint(150, 175))
    for f in findings:
        if f.kind == "nodule":
            d.ellipse(px(f.box), fill=rng.randint(200, 240))
        elif f.kind == "consolidation":
            d.ellipse(px(f.box), fill=rng.randint(165, 200))
        elif f.kind == "pleural effusion":
            d.rectangle(px(f.box), fill=rng.randint(175, 205))
        elif f.kind == "pneumothorax":
            d.rectangle(px(f.box), fill=rng.randint(0, 12))
    return img.filter(ImageFilter.GaussianBlur(radius=max(0.5, size / 100))).convert("RGB")


def write_report(findings: list[Finding]) -> tuple[str, str]:
    """(findings, impression) sections written from the known labels."""
    kinds = {f.kind for f in findings}
    sentences = [f.sentence for f in findings]
    if "cardiomegaly" not in kinds:
        sentences.append("The heart size is normal.")
    absent = [k for k in ("pleural effusion", "pneumothorax") if k not in kinds]
    if absent:
        sentences.append("No " + " or ".join(absent) + ".")
    if not kinds & {"nodule", "consolidation"}:
        sentences.append("The lungs are otherwise clear." if findings else "The lungs are clear.")
    impression = " ".join(f.impression for f in findings) or "No acute cardiopulmonary process."
    return " ".join(sentences), impression


def sample_findings(rng: random.Random) -> list[Finding]:
    count = rng.choices([0, 1, 2], weights=[3, 5, 2])[0]
    kinds = rng.sample(KINDS, count)
    findings = [make_finding(k, rng) for k in kinds]
    sides = [(f.kind, f.side) for f in findings]
    return findings if len(set(sides)) == len(sides) else findings[:1]


def generate(cfg: DataConfig, out_dir: Path) -> Iterator:
    """Records until each split has its size, images under `out_dir/images/cxr/`."""
    rng = random.Random(cfg.seed)
    (out_dir / "images" / "cxr").mkdir(parents=True, exist_ok=True)
    wanted = {"train": cfg.train_size or 256, "test": cfg.test_size or 64}
    i = 0
    for split, size in wanted.items():
        made = 0
        while made < size:
            findings = sample_findings(rng)
            rel = f"images/cxr/cxr-{i:06d}.png"
            draw_chest(findings, cfg.image_size, rng).save(out_dir / rel)
            labels = {OBSERVATION[f.kind]: 1 for f in findings}
            base = {"labels": labels}
            if "report" in cfg.cxr_tasks and made < size:
                findings_text, impression = write_report(findings)
                report = f"Findings: {findings_text} Impression: {impression}"
                trace = " ".join(f.trace for f in findings) or "Both lungs are dark and clear; the heart is normal."
                meta = {**base, "findings": findings_text, "impression": impression, "rationale": trace}
                yield report_record(f"cxr-{i:06d}-report", rel, report, SOURCE, split, meta)
                made += 1
            if "grounding" in cfg.cxr_tasks:
                for j, f in enumerate(findings):
                    if made >= size:
                        break
                    box = [round(v, 2) for v in f.box]  # as the answer writes it: the target scores 1
                    meta = {**base, "rationale": f.trace}
                    yield grounding_record(
                        f"cxr-{i:06d}-g{j}", rel, f.phrase, [box], SOURCE, split, meta, box_scale=cfg.box_scale
                    )
                    made += 1
            i += 1


def source(cfg: DataConfig, staging: Path):
    """Prep source `cxr-synthetic`: images are written straight into the staging folder."""
    return staging, (Row(number=n, record=rec) for n, rec in enumerate(generate(cfg, staging), 1))
