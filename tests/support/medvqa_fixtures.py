"""Small copies of the public medical VQA datasets in the exact layout each is downloaded in (CSV, JSON, parquet,
saved Hugging Face datasets, image folders), with real image files. Shared by the unit, integration and bench tests.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

MODALITIES = ["CT", "MRI", "X-ray"]
ORGANS = ["liver", "lung", "kidney", "spleen"]


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A small picture that differs per seed: a grey field shaded in a random direction, with one bright disc.
    The shading keeps two seeds apart at the leak check's 32-pixel scale (medrl.data.leakage), as anatomy keeps
    real scans apart; a flat field with a disc made distinct seeds look like copies of each other."""
    rng = random.Random(seed)
    base, dx, dy = rng.randint(0, 60), rng.uniform(-1, 1), rng.uniform(-1, 1)
    shade = [
        int(base + 40 * (dx * (x / size[0] - 0.5) + dy * (y / size[1] - 0.5)) + 20)
        for y in range(size[1])
        for x in range(size[0])
    ]
    im = Image.new("L", size)
    im.putdata(shade)
    im = im.convert("RGB")
    d = ImageDraw.Draw(im)
    x, y = rng.randint(4, size[0] - 16), rng.randint(4, size[1] - 16)
    d.ellipse([x, y, x + 12, y + 12], fill=(rng.randint(150, 255), rng.randint(100, 255), 90))
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def write_image(path: Path, seed: int, fmt: str = "JPEG", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, fmt, **kw))
    return path


def _question(rng: random.Random) -> tuple[str, list[str], int]:
    organ = rng.choice(ORGANS)
    options = rng.sample(["Diffuse uptake pattern", "Focal lesion", "No abnormality", "Cyst", "Calcification"], 4)
    return f"What is seen in the {organ} of this {rng.choice(MODALITIES)} image?", options, rng.randrange(4)


PREFIXES = ["{L}:{t}", " {L}:{t} ", "{L}. {t}", "{L}) {t}", "{L} : {t}"]


def pmc_rows(n: int, seed: int, first_image: int = 0, share: int = 1) -> list[dict[str, str]]:
    """PMC-VQA rows; `share` questions per figure. Choice cells carry the letter prefixes seen in the files;
    `options` (not a column) keeps the bare option texts for the tests."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, options, answer = _question(rng)
        question = f"{question} (case {i})"
        row = {"Figure_path": f"PMC{first_image + i // share:07d}_Fig1.jpg", "Question": question, "options": options}
        row["Answer"] = options[answer]
        for j, letter in enumerate("ABCD"):
            row[f"Choice {letter}"] = rng.choice(PREFIXES).format(L=letter, t=options[j])
        row["Answer_label"] = "ABCD"[answer]
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], answer_column: str = "Answer") -> Path:
    """A CSV as PMC-VQA ships it; `answer_column="Anwser"` reproduces the misspelled copies."""
    header = ["Figure_path", "Question", answer_column, "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(
                [r["Figure_path"], r["Question"], r["Answer"]]
                + [r[f"Choice {c}"] for c in "ABCD"]
                + [r["Answer_label"]]
            )
    return path


def pmc_vqa(root: Path, n_train: int = 24, n_test: int = 8, version: int = 1, share: int = 1) -> Path:
    """`train.csv` + `test.csv` + `images/` (v1) or `train_2.csv` + `test_2.csv` + `figures/` with `Anwser` (v2)."""
    suffix, image_dir, answer_column = ("", "images", "Answer") if version == 1 else ("_2", "figures", "Anwser")
    train = pmc_rows(n_train, seed=1, share=share)
    test = pmc_rows(n_test, seed=2, first_image=10_000, share=share)
    write_csv(root / f"train{suffix}.csv", train, answer_column)
    write_csv(root / f"test{suffix}.csv", test, answer_column)
    for row in train + test:
        path = root / image_dir / row["Figure_path"]
        if not path.exists():
            write_image(path, seed=int(row["Figure_path"][3:10]))
    return root


def slake(root: Path, n_images: int = 6) -> Path:
    """`train.json`, `validation.json`, `test.json` and `imgs/xmlabN/source.jpg`, English and Chinese questions."""
    qid = 0
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for i in range(n_images):
        split = "test" if i % 3 == 2 else "validation" if i == 1 else "train"
        name = f"xmlab{i}/source.jpg"
        write_image(root / "imgs" / name, seed=100 + i, size=(80, 80), mode="L" if i % 2 else "RGB")
        modality = MODALITIES[i % 3]
        for question, answer, kind, lang in [
            ("Is the lung healthy?", "No" if i % 2 else "Yes", "CLOSED", "en"),
            ("Which organ is abnormal?", ORGANS[i % 4].capitalize(), "OPEN", "en"),
            ("Which is bigger in this image, liver or spleen?", "Liver", "CLOSED", "en"),
            ("肺部健康吗?", "是", "CLOSED", "zh"),
        ]:
            qid += 1
            splits[split].append(
                {
                    "img_id": i,
                    "img_name": name,
                    "question": question,
                    "answer": answer,
                    "q_lang": lang,
                    "location": "Lung",
                    "modality": modality,
                    "answer_type": kind,
                    "base_type": "vqa",
                    "content_type": "Abnormality",
                    "triple": ["vhead", "_", "_"],
                    "qid": qid,
                }
            )
    for split, entries in splits.items():
        (root / f"{split}.json").write_text(json.dumps(entries, ensure_ascii=False, indent=1), encoding="utf-8")
    return root


def omnimedvqa(root: Path, per_dataset: int = 12) -> Path:
    """`QA_information/{Open,Restricted}-access/<dataset>.json` + `Images/<dataset>/...`; two to four options."""
    specs = [
        ("Open-access", "ACRIMA", "Fundus Photography", "Disease Diagnosis", 4),
        ("Open-access", "Chest CT Scan", "CT(Computed Tomography)", "Anatomy Identification", 3),
        ("Restricted-access", "MIAS", "X-Ray", "Modality Recognition", 2),
    ]
    for access, dataset, modality, qtype, n_options in specs:
        entries = []
        for i in range(per_dataset):
            rng = random.Random(f"{dataset}{i}")
            image = f"Images/{dataset}/img_{i:03d}.png"
            write_image(root / image, seed=rng.randrange(10_000), fmt="PNG")
            options = rng.sample(["Glaucoma", "Normal", "Cataract", "Myopia", "Lung", "Heart"], n_options)
            entry = {
                "dataset": dataset,
                "question_id": f"{dataset}_{i:04d}",
                "question_type": qtype,
                "question": f"What does image {i} of {dataset} show?",
                "gt_answer": options[i % n_options],
                "image_path": image,
                "modality_type": modality,
            }
            if dataset == "Chest CT Scan" and i == 0:
                entry["modality"] = entry.pop("modality_type")  # one file of the release spells it so
            entry.update({f"option_{'ABCD'[j]}": o for j, o in enumerate(options)})
            entries.append(entry)
        path = root / "QA_information" / access / f"{dataset}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return root


def hf_rows(n: int, seed: int, n_images: int = 4) -> dict[str, list]:
    """VQA-RAD / PathVQA columns: several questions per image, yes/no and open answers."""
    rng = random.Random(seed)
    pics = [image_bytes(seed * 100 + k, "JPEG", size=(72, 60)) for k in range(n_images)]
    if seed == 3:  # PathVQA has CMYK JPEGs
        pics[0] = image_bytes(seed * 100, "JPEG", size=(72, 60), mode="CMYK")
    cols: dict[str, list] = {"image": [], "question": [], "answer": []}
    for i in range(n):
        k = i % n_images
        if i % 2:
            q, a = f"is there a lesion in region {i}?", rng.choice(["yes", "no", "Yes"])
        else:
            q, a = f"where is the abnormality {i}?", rng.choice(ORGANS)
        cols["image"].append({"bytes": pics[k], "path": f"synpic{seed}{k}.jpg"})
        cols["question"].append(q)
        cols["answer"].append(a)
    return cols


def hf_saved(root: Path, n_train: int = 16, n_test: int = 8) -> Path:
    """A DatasetDict written by `save_to_disk` (VQA-RAD on the hub has train and test)."""
    import datasets

    train = hf_rows(n_train, seed=1)
    # the same image and question twice: the hub copy of VQA-RAD has such pairs
    for col in train:
        train[col].append(train[col][0])
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(train).cast_column("image", datasets.Image()),
            "test": datasets.Dataset.from_dict(hf_rows(n_test, seed=2)).cast_column("image", datasets.Image()),
        }
    )
    dd.save_to_disk(str(root))
    return root


def hf_parquet(root: Path, n_train: int = 16, n_val: int = 4, n_test: int = 8) -> Path:
    """The hub's parquet layout: `data/<split>-00000-of-00001.parquet` (PathVQA has train, validation, test)."""
    import datasets

    for split, n, seed in (("train", n_train, 3), ("validation", n_val, 4), ("test", n_test, 5)):
        ds = datasets.Dataset.from_dict(hf_rows(n, seed)).cast_column("image", datasets.Image())
        (root / "data").mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def records_jsonl(root: Path, n_train: int = 12, n_test: int = 6) -> Path:
    """Our record format: `train.jsonl` + `test.jsonl` with images beside them; closed and open questions."""
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(n):
            image = f"scans/{split}-{i}.png"
            write_image(root / image, seed=500 + i + (1000 if split == "test" else 0), fmt="PNG")
            if i % 2:
                rec = {
                    "id": f"{split}-{i}",
                    "image": image,
                    "question": f"Which organ is shown ({i})?",
                    "choices": ["Liver", "Lung"],
                    "answer": "Lung",
                    "answer_label": "B",
                    "split": split,
                }
            else:
                rec = {
                    "id": f"{split}-{i}",
                    "image": image,
                    "question": f"Describe finding {i}.",
                    "answer": "small cyst",
                    "split": split,
                    "meta": {"modality": "CT"},
                }
            lines.append(json.dumps(rec))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


BUILDERS = {
    "pmc-vqa": pmc_vqa,
    "vqa-rad": hf_saved,
    "path-vqa": hf_parquet,
    "slake": slake,
    "omnimedvqa": omnimedvqa,
    "jsonl": records_jsonl,
}


def run_medrl(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python -m medrl ...` importing this checkout's code (not an installed copy)."""
    import medrl

    src = str(Path(medrl.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "medrl", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
