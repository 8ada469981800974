"""A judge run in this process by a causal LM (the paper: BioGPT), deterministic and batched.

Yes/No compares the next-token scores of "Yes" and "No" after the prompt; a 1-10 score picks the most likely of
the ten continuations. No sampling, so the same prompt always gets the same verdict, alone or in a batch.
"""

from __future__ import annotations

from medrl.config import HFJudgeConfig
from medrl.judge.templates import SCORES, YES_NO
from medrl.models.causal_lm import load_causal_lm


class HFJudge:
    proxy = False

    def __init__(self, cfg: HFJudgeConfig, lm=None):
        self.name = f"hf:{cfg.model}"
        self.batch_size = cfg.batch_size
        self.lm = lm or load_causal_lm(cfg.model, cfg.device, cfg.trust_remote_code)
        yes, no = self._first_tokens(YES_NO[0]), self._first_tokens(YES_NO[1])
        # A token both answers can start with (a lone space in some vocabularies) tells them apart no better.
        self.yes_ids, self.no_ids = yes - no, no - yes
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"judge.model={cfg.model}: its tokenizer starts 'Yes' and 'No' with the same token")
        self.calls = 0

    def _first_tokens(self, word: str) -> set[int]:
        """The token a reply would start with, with and without a leading space."""
        return {ids[0] for ids in (self.lm.encode(word), self.lm.encode(" " + word)) if ids}

    def _prompt_ids(self, prompt: str, room: int) -> list[int]:
        ids = self.lm.encode(prompt, special=True)
        # Too long for the model: keep the end, where the question to answer is.
        return ids[-(self.lm.max_tokens - room) :] if len(ids) > self.lm.max_tokens - room else ids

    def yes_no(self, prompts: list[str]) -> list[bool | None]:
        verdicts: list[bool | None] = []
        yes, no = sorted(self.yes_ids), sorted(self.no_ids)
        for start in range(0, len(prompts), self.batch_size):
            seqs = [self._prompt_ids(p, 1) for p in prompts[start : start + self.batch_size]]
            logits = self.lm.logits_at(seqs, [[len(s) - 1] for s in seqs])
            self.calls += 1
            for (row,) in logits:
                y, n = float(row[yes].max()), float(row[no].max())
                verdicts.append(None if y == n else y > n)
        return verdicts

    def score(self, prompts: list[str]) -> list[int | None]:
        conts = [self.lm.encode(" " + s) for s in SCORES]
        room = max(len(c) for c in conts)
        scores: list[int | None] = []
        for start in range(0, len(prompts), self.batch_size):
            heads = [self._prompt_ids(p, room) for p in prompts[start : start + self.batch_size]]
            seqs = [h + c for h in heads for c in conts]
            positions = [list(range(len(h) - 1, len(h) + len(c) - 1)) for h in heads for c in conts]
            logits = self.lm.logits_at(seqs, positions)
            self.calls += 1
            totals = []
            for row, (seq, pos) in enumerate(zip(seqs, positions, strict=True)):
                logp = 0.0
                for k, p in enumerate(pos):
                    logp += float(logits[row][k].log_softmax(-1)[seq[p + 1]])
                totals.append(logp)
            for i in range(len(heads)):
                mine = totals[i * len(conts) : (i + 1) * len(conts)]
                scores.append(int(SCORES[max(range(len(mine)), key=mine.__getitem__)]))
        return scores

    def stats(self) -> dict:
        return {"forward_passes": self.calls}
