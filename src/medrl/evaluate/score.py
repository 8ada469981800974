"""Score an arm's predictions: accuracy (the reward's rule, strict, lenient; closed and open apart), similarity,
perplexity, thinking reward and thinking length, each as mean (± std) with how it was measured; and the share of
answers cut at the token limit.

A metric whose model is not here is `unavailable` with the reason, never a guess; one the judge could not
finish is `incomplete` with its counts; one it scored for no answer at all is `unscored`, with no number and the
judge's problem as the reason. The reasoning metrics are taken over answers that have reasoning.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TypeVar

from medrl.config import StudyConfig
from medrl.data.prompt import question_text
from medrl.data.records import Record
from medrl.evaluate.perplexity import PAPER_MODEL as PPL_PAPER
from medrl.evaluate.perplexity import PerplexityScorer
from medrl.evaluate.similarity import PAPER_MODEL as SIM_PAPER
from medrl.evaluate.similarity import MetricUnavailable, SimilarityScorer
from medrl.evaluate.stats import bootstrap_ci, summarize
from medrl.evaluate.thinking import PAPER_MODEL as THINK_PAPER
from medrl.evaluate.thinking import is_paper_judge, thinking_rewards
from medrl.judge import build_judge
from medrl.rewards.parse import think_text

log = logging.getLogger("medrl")

ACCURACY_RULE = (
    "final <answer> (NFKC, invisible characters and markdown emphasis dropped) names the reference option by letter "
    "or exact text (open: same text)"
)
STRICT_RULE = "closed: the reference letter alone; open: the same text"
LENIENT_RULE = "also counts an answer whose text names the reference option and no other"
TRUNCATED_SOURCE = "generation stopped at evaluate.max_new_tokens, not at an end-of-sequence token (engine's record)"
UNRECORDED = "predictions from an older medrl, which did not record whether an answer was cut at the token limit"


def _free() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def unavailable(reason: str, **source) -> dict:
    return {"mean": None, "std": None, "n": 0, "missing": 0, "status": "unavailable", "reason": reason, **source}


def _accuracy(rows: list[dict], field: str, cfg: StudyConfig, rule: str) -> dict:
    values = [float(r[field]) for r in rows]
    ci = bootstrap_ci(values, cfg.evaluate.bootstrap_samples, cfg.evaluate.seed)
    return {**summarize(values), "ci95": ci, "status": "ok", "rule": rule}


def truncation(rows: list[dict]) -> dict:
    """Share of answers whose generation was cut at the token limit (`count` of `n`). A row without the field (or
    None) is unknown: left out and counted in `missing`, never taken as not cut; none known is `unavailable`.

    >>> m = truncation([{"truncated": True}, {"truncated": False}, {}])
    >>> m["mean"], m["count"], m["n"], m["missing"], m["status"]
    (0.5, 1, 2, 1, 'ok')
    >>> {k: v for k, v in truncation([{}, {"truncated": None}]).items() if k in ("mean", "n", "missing", "status")}
    {'mean': None, 'n': 0, 'missing': 2, 'status': 'unavailable'}
    """
    flags = [r.get("truncated") for r in rows]
    if all(f is None for f in flags):
        reason = f"{UNRECORDED}; evaluate the arm again to measure it"
        return unavailable(reason, missing=len(rows), source=TRUNCATED_SOURCE)
    result = {
        **summarize([None if f is None else float(f) for f in flags]),
        "count": sum(1 for f in flags if f),
        "status": "ok",
        "source": TRUNCATED_SOURCE,
    }
    if result["missing"]:
        result["reason"] = f"{result['missing']} of {len(rows)} answers have no record of it ({UNRECORDED})"
    return result


Scorer = TypeVar("Scorer")


def _reasoning_metric(
    key: str,
    rows: list[dict],
    have: list[int],
    load: Callable[[], Scorer],
    run: Callable[[Scorer, list[int]], list],
    source: Callable[[Scorer], dict],
) -> dict:
    """Load a scorer, score the answers that have reasoning, write per-row values; a missing model is reported."""
    try:
        scorer = load()
    except MetricUnavailable as err:
        log.warning("%s: not measured: %s", key, err)
        return unavailable(str(err))
    try:
        values = run(scorer, have)
        info = source(scorer)
    finally:
        if hasattr(scorer, "close"):
            scorer.close()
    for i, value in zip(have, values, strict=True):
        rows[i][key] = value
    result = {**summarize(values), "no_reasoning": len(rows) - len(have), **info}
    if not have:
        result.update(status="empty", reason="no answer had a <think> part to score")
    elif not result["n"]:
        result.update(status="unscored", reason=f"none of the {len(have)} reasonings could be scored")
    elif result["missing"]:
        result.update(status="incomplete", reason=f"{result['missing']} of {len(have)} reasonings could not be scored")
    else:
        result["status"] = "ok"
    del scorer
    _free()
    return result


def score_predictions(cfg: StudyConfig, records: list[Record], rows: list[dict]) -> dict:
    """Metrics of one arm from its prediction rows (in the order of `records`); adds per-row metric values."""
    ev = cfg.evaluate
    metrics: dict[str, dict] = {
        "accuracy": _accuracy(rows, "correct", cfg, ACCURACY_RULE),
        "accuracy_strict": _accuracy(rows, "correct_strict", cfg, STRICT_RULE),
        "accuracy_lenient": _accuracy(rows, "correct_lenient", cfg, LENIENT_RULE),
    }
    for kind in ("closed", "open"):
        part = [r for r in rows if r["answer_type"] == kind]
        for field, name in (("correct", ""), ("correct_strict", "_strict"), ("correct_lenient", "_lenient")):
            metrics[f"accuracy_{kind}{name}"] = {**summarize([float(r[field]) for r in part]), "status": "ok"}
    metrics["format"] = {**summarize([float(r["format"]) for r in rows]), "status": "ok"}
    metrics["think_tokens"] = {
        **summarize([float(r["think_tokens"]) for r in rows]),
        "status": "ok",
        "source": "tokens inside <think>, by the evaluated model's tokenizer",
    }
    metrics["truncated"] = truncation(rows)

    reasoning = [think_text(r["completion"]) for r in rows]
    have = [i for i, text in enumerate(reasoning) if text]

    if similarity_model := ev.similarity_model:
        metrics["similarity"] = _reasoning_metric(
            "similarity",
            rows,
            have,
            lambda: SimilarityScorer(similarity_model, ev.similarity_kind, ev.metric_device, ev.metric_batch_size),
            lambda s, idx: s.score([(reasoning[i], records[i].answer) for i in idx]),
            lambda s: {"model": s.name, "kind": s.kind, "proxy": s.proxy, "paper_model": SIM_PAPER},
        )
    else:
        metrics["similarity"] = unavailable(
            f"evaluate.similarity_model is not set (the paper: {SIM_PAPER})", paper_model=SIM_PAPER
        )

    if perplexity_model := ev.perplexity_model:
        metrics["perplexity"] = _reasoning_metric(
            "perplexity",
            rows,
            have,
            lambda: PerplexityScorer(
                perplexity_model, ev.metric_device, ev.metric_batch_size, ev.perplexity_max_tokens
            ),
            lambda s, idx: s.score([reasoning[i] for i in idx]),
            lambda s: {"model": s.name, "proxy": s.proxy, "paper_model": PPL_PAPER},
        )
    else:
        metrics["perplexity"] = unavailable(
            f"evaluate.perplexity_model is not set (the paper: {PPL_PAPER})", paper_model=PPL_PAPER
        )

    def load_judge():
        try:
            return build_judge(ev.judge)
        except Exception as err:  # a judge model that cannot load here is a missing model, not a crash
            raise MetricUnavailable(
                f"evaluate.judge (backend {ev.judge.backend}, model {getattr(ev.judge, 'model', None)}) cannot be "
                f"loaded here ({type(err).__name__}); check evaluate.judge.model or choose another "
                "evaluate.judge.backend"
            ) from None

    metrics["thinking_reward"] = _reasoning_metric(
        "thinking_reward",
        rows,
        have,
        load_judge,
        lambda j, idx: thinking_rewards(
            j,
            [question_text(records[i], "") for i in idx],
            [records[i].answer for i in idx],
            [reasoning[i] for i in idx],
        ),
        lambda j: {
            "model": j.name,
            "proxy": bool(j.proxy) or not is_paper_judge(j.name),
            "paper_model": THINK_PAPER,
            "judge": j.stats() if hasattr(j, "stats") else {},
            "problem": _judge_problem(j),
        },
    )
    thinking = metrics["thinking_reward"]
    if thinking["status"] in ("incomplete", "unscored"):
        problem = thinking.pop("problem", "") or "judge unreachable or unparsable replies; see judge.outcomes"
        thinking["reason"] += f" ({problem})"
        log.warning("thinking_reward: %s", thinking["reason"])
    thinking.pop("problem", None)
    return metrics


def _judge_problem(judge) -> str:
    """What went wrong over all of the judge's calls of this scoring, with the fix; empty when nothing did."""
    explain = getattr(judge, "explain", None)
    stats = judge.stats() if hasattr(judge, "stats") else {}
    if not callable(explain) or "outcomes" not in stats:
        return ""
    from collections import Counter

    return explain(Counter(stats["outcomes"]))


def metrics_complete(metrics: dict) -> bool:
    """False when a metric was cut short (a judge that was down, or that scored nothing): scoring the stored
    predictions again may finish it."""
    return not any(isinstance(m, dict) and m.get("status") in ("incomplete", "unscored") for m in metrics.values())
