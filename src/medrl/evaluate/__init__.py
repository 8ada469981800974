"""Evaluation: generate answers for the test split, then score them (accuracy, reasoning length, ...)."""

from medrl.evaluate.run import evaluate_model

__all__ = ["evaluate_model"]
