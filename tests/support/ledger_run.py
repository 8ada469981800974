"""`medrl` and one extra reward, `ledger_reward` (`tests.support.ledger_run:ledger_reward` in a config, weight 0),
that appends the ids of the prompts each optimizer step trained on to the file named by MEDRL_LEDGER. The resume
test runs this as a subprocess to see the data order of a run; everything else is the real `medrl train`."""

import json
import os
import sys


def ledger_reward(completions, id, trainer_state, **kwargs):
    with open(os.environ["MEDRL_LEDGER"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": trainer_state.global_step, "ids": list(dict.fromkeys(id))}) + "\n")
    return [0.0] * len(completions)


if __name__ == "__main__":
    from medrl.cli import main

    sys.argv[0] = "medrl"
    main()
