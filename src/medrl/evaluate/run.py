"""Evaluate an arm's model on the test split: predictions.jsonl (one row per question) and metrics.json.

Generation first (greedy, batched), then the model is let go and the metric models score the predictions.
"""

from __future__ import annotations

import gc
from pathlib import Path

from medrl.config import StudyConfig
from medrl.data.records import Record, read_records
from medrl.evaluate.accuracy import judge_answer
from medrl.evaluate.cxr import score_tasks
from medrl.evaluate.generate import generate_with
from medrl.evaluate.score import score_predictions
from medrl.evaluate.stats import summarize
from medrl.models.load import load_processor
from medrl.rewards.basic import format_reward
from medrl.rewards.parse import answer_text, think_text

__all__ = ["evaluate_model", "rescore", "summarize", "test_records"]


def test_records(cfg: StudyConfig, data_dir: Path) -> list[Record]:
    records = read_records(data_dir, "test")
    return records[: cfg.evaluate.limit] if cfg.evaluate.limit else records


def prediction_row(rec: Record, text: str, tokenizer, truncated: bool | None = None) -> dict:
    """One question's row of predictions.jsonl. `truncated`: generation stopped at evaluate.max_new_tokens, not at
    an end-of-sequence token; None where that is not known (an answer that did not come from generation)."""
    think = think_text(text)
    return {
        "id": rec.id,
        "completion": text,
        "truncated": truncated,
        "answer": answer_text(text),
        "reference": rec.answer,
        **judge_answer(text, rec),
        "format": format_reward([text])[0] == 1.0,
        "think_tokens": len(tokenizer(think, add_special_tokens=False)["input_ids"]) if think else 0,
    }


def evaluate_model(cfg: StudyConfig, model_ref: str, data_dir: Path) -> tuple[list[dict], dict]:
    """Generate greedily for every test record and score it. Returns (prediction rows, metrics)."""
    records = test_records(cfg, data_dir)
    processor = load_processor(model_ref, cfg.model)
    completions = generate_with(
        cfg.evaluate.engine, model_ref, cfg.model, processor, records, data_dir, cfg.prompt,
        cfg.evaluate.max_new_tokens, cfg.evaluate.batch_size,
    )  # fmt: skip
    rows = [
        prediction_row(rec, answer.text, processor.tokenizer, answer.truncated)
        for rec, answer in zip(records, completions, strict=True)
    ]
    gc.collect()  # the generating model is let go; on a GPU the metric models that come next need the memory
    return rows, score(cfg, records, rows)


def score(cfg: StudyConfig, records: list[Record], rows: list[dict]) -> dict:
    """VQA metrics over the VQA questions, then report and grounding metrics over those tasks' records."""
    vqa = [i for i, rec in enumerate(records) if rec.task == "vqa"]
    metrics = score_predictions(cfg, [records[i] for i in vqa], [rows[i] for i in vqa]) if vqa else {}
    return score_tasks(records, rows, metrics, cfg.evaluate.report_scorers)


def rescore(cfg: StudyConfig, data_dir: Path, rows: list[dict]) -> tuple[list[dict], dict]:
    """Score stored predictions again (a judge that was down is back) without generating anew."""
    records = test_records(cfg, data_dir)
    by_id = {r["id"]: r for r in rows}
    missing = [rec.id for rec in records if rec.id not in by_id]
    if missing:
        raise ValueError(f"predictions lack {len(missing)} test questions; evaluate the arm again instead")
    rows = [{**by_id[rec.id], **judge_answer(by_id[rec.id]["completion"], rec)} for rec in records]
    return rows, score(cfg, records, rows)
