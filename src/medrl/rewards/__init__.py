"""Rewards as pure functions over lists (TRL's contract). `REWARDS` maps config names to functions;
`reward_functions` binds the ones that need settings (judge, length cap) for one arm."""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from medrl.config import ConfigError
from medrl.judge import build_judge
from medrl.rewards.basic import accuracy_reward, format_reward
from medrl.rewards.grounding import grounding_reward
from medrl.rewards.length import cwr_reward, ecr_reward
from medrl.rewards.report_quality import report_label_reward, report_rouge_reward
from medrl.rewards.semantic import SemanticReward, UnscorableError, semantic_reward

if TYPE_CHECKING:
    from medrl.config import JudgeConfig, RewardSpec

REWARDS: dict[str, Callable[..., Sequence[float | None]]] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "semantic": semantic_reward,
    "ecr": ecr_reward,
    "cwr": cwr_reward,
    "grounding_iou": grounding_reward,
    "report_label_f1": report_label_reward,
    "report_rouge_l": report_rouge_reward,
}


def capped_rewards() -> list[str]:
    """Rewards that take a length `cap` (RewardSpec.cap): their function has a `cap` parameter, the one record.

    >>> capped_rewards()
    ['ecr', 'cwr']
    """
    return [name for name, func in REWARDS.items() if "cap" in inspect.signature(func).parameters]


def custom_reward(path: str) -> CustomReward:
    """The reward function `module.path:function` names, imported from an installed module (never from a file path),
    checked to take TRL's arguments: `completions` (and the other columns) by keyword, and `**kwargs` for the rest."""
    module_name, _, func_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"reward {path}: module {module_name} cannot be imported ({err}); install the package that holds it in "
            "this environment (and in the training image)"
        ) from None
    except Exception as err:  # the module is there but fails while it loads: its own bug, named, not a traceback
        raise ConfigError(
            f"reward {path}: module {module_name} fails on import ({type(err).__name__}: {str(err)[:200]}); fix it"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"reward {path}: module {module_name} has no function {func_name}")
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}  # a builtin without a signature: refused below
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    takes = "completions" in params and params["completions"].kind in by_keyword
    if not takes or not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ConfigError(
            f"reward {path}: {func_name} must take (completions, **kwargs) and return one float (or None) per "
            "completion, as TRL's reward functions do (TRL passes completions and the dataset's columns by name)"
        )
    return CustomReward(path, func)


class NamedReward:
    """A reward function with its settings bound, named for TRL's logs (rewards/<name>/mean)."""

    def __init__(self, name: str, func: Any, **settings: Any):
        self.__name__ = name
        self.func = func
        self.settings = settings

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        return self.func(completions=completions, **kwargs, **self.settings)


class CustomReward(NamedReward):
    """A user's reward function: what it returns is checked, since TRL would fail on it far from its cause."""

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        values = super().__call__(completions, **kwargs)
        if (
            not isinstance(values, list | tuple)
            or len(values) != len(completions)
            or not all(v is None or isinstance(v, numbers.Real) for v in values)
        ):
            got = f"{len(values)} values" if isinstance(values, list | tuple) else type(values).__name__
            raise ValueError(
                f"reward {self.__name__} returned {got} for {len(completions)} completions: it must return a list "
                "of one float (or None) per completion"
            )
        return list(values)


def reward_functions(specs: list[RewardSpec], judge: JudgeConfig) -> list[Any]:
    """One callable per configured reward, in order; the judge is built once, only if a reward needs it. A
    `cap` left unset keeps the function's default."""
    funcs: list[Any] = []
    for spec in specs:
        if spec.name == "semantic":
            funcs.append(SemanticReward(build_judge(judge), judge.max_unscorable_fraction, name=spec.name))
        elif ":" in spec.name:
            funcs.append(custom_reward(spec.name))
        elif spec.cap is not None:
            funcs.append(NamedReward(spec.name, REWARDS[spec.name], cap=spec.cap))
        else:
            funcs.append(NamedReward(spec.name, REWARDS[spec.name]))
    return funcs


__all__ = [
    "REWARDS",
    "CustomReward",
    "NamedReward",
    "SemanticReward",
    "UnscorableError",
    "accuracy_reward",
    "capped_rewards",
    "custom_reward",
    "cwr_reward",
    "ecr_reward",
    "format_reward",
    "reward_functions",
    "semantic_reward",
]
