"""`medrl` and one extra reward, `varied_reward` (`tests.support.varied_reward_run:varied_reward` in a config), that
tells any two different completions apart (a hash of the text scaled to [0, 1)): the untrained tiny model never
writes the think/answer format, so the real rewards give every completion of a group the same score, zero advantages
and no GRPO update to save. Everything else is the real `medrl train`."""

import hashlib
import sys

from medrl.rewards.parse import completion_text


def varied_reward(completions, **kwargs):
    return [int(hashlib.sha256(completion_text(c).encode()).hexdigest()[:8], 16) / 16**8 for c in completions]


if __name__ == "__main__":
    from medrl.cli import main

    sys.argv[0] = "medrl"
    main()
