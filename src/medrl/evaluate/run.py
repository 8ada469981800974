"""Score an arm's model on the test split: predictions.jsonl (one row per question) and metrics.json."""

from __future__ import annotations

import statistics
from pathlib import Path

from medrl.config import StudyConfig
from medrl.data.records import read_records
from medrl.evaluate.cxr import score_tasks
from medrl.evaluate.generate import generate
from medrl.models.load import load_model, load_processor
from medrl.rewards.basic import format_reward
from medrl.rewards.parse import answer_text, is_correct, think_text


def summarize(values: list[float]) -> dict:
    """mean, std (population, as Table 1 reports) and n; None values (unscorable) are left out and counted."""
    present = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(present) if present else None,
        "std": statistics.pstdev(present) if len(present) > 1 else 0.0 if present else None,
        "n": len(present),
        "missing": len(values) - len(present),
    }


def evaluate_model(cfg: StudyConfig, model_ref: str, data_dir: Path) -> tuple[list[dict], dict]:
    """Generate greedily for every test record and score it. Returns (prediction rows, metrics)."""
    records = read_records(data_dir, "test")
    if cfg.evaluate.limit:
        records = records[: cfg.evaluate.limit]
    processor = load_processor(model_ref, cfg.model)
    model = load_model(model_ref, cfg.model)
    completions = generate(
        model, processor, records, data_dir, cfg.prompt, cfg.evaluate.max_new_tokens, cfg.evaluate.batch_size
    )
    tokenizer = processor.tokenizer
    rows = []
    for rec, text in zip(records, completions, strict=True):
        think = think_text(text)
        rows.append(
            {
                "id": rec.id,
                "completion": text,
                "answer": answer_text(text),
                "reference": rec.answer,
                "correct": is_correct(text, rec.answer, rec.choices),
                "format": format_reward([text])[0] == 1.0,
                "think_tokens": len(tokenizer(think, add_special_tokens=False)["input_ids"]) if think else 0,
            }
        )
    metrics = {
        "accuracy": summarize([float(r["correct"]) for r in rows]),
        "format": summarize([float(r["format"]) for r in rows]),
        "think_tokens": summarize([float(r["think_tokens"]) for r in rows]),
    }
    metrics = score_tasks(records, rows, metrics, cfg.evaluate.report_scorers)  # report and grounding records
    return rows, metrics
