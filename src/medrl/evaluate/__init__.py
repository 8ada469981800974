"""Evaluation: generate answers for the test split, then score them (accuracy, similarity, perplexity, thinking
reward, reasoning length)."""

from medrl.evaluate.run import evaluate_model, rescore
from medrl.evaluate.score import metrics_complete, score_predictions

__all__ = ["evaluate_model", "metrics_complete", "rescore", "score_predictions"]
