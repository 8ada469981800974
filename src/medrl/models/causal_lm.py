"""A text-only causal LM for scoring (the hf judge, the perplexity metric): loading and batched log-probabilities.

Batches are right-padded, so every real token keeps the positions it has alone and a text scores the same in a
batch as by itself; scores are read at each row's own positions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any


def pick_device(name: str) -> str:
    """`auto` is CUDA when there is one, else CPU."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class CausalLM:
    model: Any
    tokenizer: Any
    device: str
    max_tokens: int

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        for pad in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, 0):
            if pad is not None:
                return int(pad)
        return 0

    def encode(self, text: str, special: bool = False) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _batch(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def logits_at(self, seqs: list[list[int]], positions: list[list[int]]):
        """Logits (float32) of the next token after each listed position of each sequence: [rows][k] x vocab."""
        import torch

        ids, mask = self._batch(seqs)
        wanted = sorted({p for row in positions for p in row})
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        if keep:  # compute the vocabulary projection only where it is read
            kwargs["logits_to_keep"] = torch.tensor(wanted, device=self.device)
        with torch.inference_mode():
            logits = self.model(**kwargs).logits.float()
        column = {p: i for i, p in enumerate(wanted)} if keep else {p: p for p in wanted}
        return [[logits[row, column[p]] for p in row_positions] for row, row_positions in enumerate(positions)]

    def token_nll(self, seqs: list[list[int]]) -> list[list[float]]:
        """Negative log-likelihood of every token after the first, per sequence (left-to-right)."""
        import torch
        import torch.nn.functional as F

        ids, mask = self._batch(seqs)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
        return [nll[row, : len(seq) - 1].tolist() for row, seq in enumerate(seqs)]


def load_causal_lm(ref: str, device: str = "auto", trust_remote_code: bool = False) -> CausalLM:
    """Load a causal LM and its tokenizer by hub id, local directory or store URI; eval mode, no sampling."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medrl.models.load import local_dir

    path = local_dir(ref)
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return CausalLM(model, tokenizer, device, int(limit or 1024))
