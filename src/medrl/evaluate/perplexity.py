"""Perplexity of the reasoning under a causal LM (Appendix B.2; the paper: microsoft/biogpt): exp of the mean
negative log-likelihood of its tokens, left to right, each text scored on its own (batched, right-padded).
`tiny:biogpt-proxy` is a tiny LM trained here on clinical sentences (the laptop demo's stand-in, marked proxy).
"""

from __future__ import annotations

import math

from medrl.evaluate.similarity import MetricUnavailable, model_source, unavailable_error
from medrl.models.causal_lm import PROXY_NAME, biogpt_proxy_dir, load_causal_lm

PAPER_MODEL = "microsoft/biogpt"


class PerplexityScorer:
    def __init__(
        self, name: str, device: str = "auto", batch_size: int = 16, max_tokens: int = 1024, trust_remote_code=False
    ):
        try:
            source = str(biogpt_proxy_dir()) if name == PROXY_NAME else model_source(name)
            self.lm = load_causal_lm(source, device, trust_remote_code)
        except Exception as err:  # not cached offline, unknown id, not a causal LM: the model is not here
            raise unavailable_error(name, "evaluate.perplexity_model", err) from None
        self.name = name
        self.batch_size = batch_size
        self.max_tokens = min(max_tokens, self.lm.max_tokens)
        tok = self.lm.tokenizer
        # The first token is scored too when the model has a start token to condition on (GPT-2 uses its EOS).
        self.start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def proxy(self) -> bool:
        return self.name == PROXY_NAME or PAPER_MODEL.split("/")[-1] not in self.name.lower()

    def ids(self, text: str) -> list[int]:
        ids = self.lm.encode(text)
        if self.start is not None:
            ids = [self.start, *ids]
        return ids[: self.max_tokens]

    def score(self, texts: list[str]) -> list[float | None]:
        """One perplexity per text; None for a text with no token to score."""
        seqs = [self.ids(t) for t in texts]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths together: less padding
        out: list[float | None] = [None] * len(seqs)
        for start in range(0, len(order), self.batch_size):
            chunk = [i for i in order[start : start + self.batch_size] if len(seqs[i]) >= 2]
            if not chunk:
                continue
            for i, nll in zip(chunk, self.lm.token_nll([seqs[i] for i in chunk]), strict=True):
                out[i] = math.exp(sum(nll) / len(nll))
        return out


__all__ = ["MetricUnavailable", "PerplexityScorer"]
