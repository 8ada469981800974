"""Rewards of a user's own package, named in a config by dotted path (`tests.support.custom_rewards:brevity`)."""


def brevity(completions, **kwargs):
    """1 for a completion of at most 5 words, falling linearly to 0 at 25."""
    words = [len(str(c if isinstance(c, str) else c[0]["content"]).split()) for c in completions]
    return [max(0.0, min(1.0, (25 - n) / 20)) for n in words]


def no_kwargs(completions):
    return [0.0 for _ in completions]


NOT_A_FUNCTION = 3


def in_trl_order(prompts, completions, **kwargs):
    """TRL passes every argument by name, so a reward may list `prompts` before `completions`."""
    return [float(len(p) < len(str(c))) for p, c in zip(prompts, completions, strict=True)]


def texts_first(texts, **kwargs):
    return [0.0 for _ in texts]


def one_value(completions, **kwargs):
    return [1.0]


def words(completions, **kwargs):
    return ["short" for _ in completions]
