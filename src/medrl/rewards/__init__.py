"""Rewards as pure functions over lists (TRL's contract). `REWARDS` maps config names to functions."""

from medrl.rewards.basic import accuracy_reward, format_reward

REWARDS = {
    "format": format_reward,
    "accuracy": accuracy_reward,
}

__all__ = ["REWARDS", "accuracy_reward", "format_reward"]
