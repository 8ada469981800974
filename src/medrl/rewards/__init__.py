"""Rewards as pure functions over lists (TRL's contract). `REWARDS` maps config names to functions."""

from medrl.rewards.basic import accuracy_reward, format_reward
from medrl.rewards.grounding import grounding_reward
from medrl.rewards.report import report_label_reward, report_rouge_reward

REWARDS = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "grounding_iou": grounding_reward,
    "report_label_f1": report_label_reward,
    "report_rouge_l": report_rouge_reward,
}

__all__ = ["REWARDS", "accuracy_reward", "format_reward"]
