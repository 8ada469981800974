"""A text-only causal LM for scoring (the hf judge, the perplexity metric): loading and batched log-probabilities.

Batches are right-padded, so every real token keeps the positions it has alone and a text scores the same in a
batch as by itself; scores are read at each row's own positions.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from medrl.models.load import local_dir
from medrl.models.tiny import build_tokenizer


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

    path = local_dir(ref)
    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device).eval()  # type: ignore[arg-type]  # transformers wraps `to` with functools.wraps, whose stub binds no self
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return CausalLM(model, tokenizer, device, int(limit or 1024))


# The BioGPT proxy of the laptop demo: a 2-layer Llama trained here for a few seconds on these sentences, so that
# fluent clinical reasoning scores a low perplexity and broken text a high one. Not BioGPT: the report marks it †.
PROXY_NAME = "tiny:biogpt-proxy"
PROXY_VERSION = 2  # bump when the corpus or the recipe changes, so a cached build is not reused
PROXY_CORPUS = [
    *(
        f"The bright round lesion lies in the {where} part of the {modality} image."
        for where in ("upper left", "upper right", "lower left", "lower right")
        for modality in ("CT", "MRI", "X-ray")
    ),
    *(
        f"The {modality} image shows {count} round lesion{'s' if count != 'one' else ''}."
        for count in ("one", "two", "three", "four")
        for modality in ("CT", "MRI", "X-ray")
    ),
    "The findings show no pleural effusion.",
    "Possible consolidation in the left lower lobe.",
    "The heart size is normal and the lungs are clear.",
    "A small nodule is seen in the right upper lobe.",
    "There is no pneumothorax and no acute fracture.",
    "The liver and the kidneys appear normal in this scan.",
    "An opacity in the lung suggests pneumonia or atelectasis.",
    "The brain shows a bright mass with surrounding edema.",
    "No acute cardiopulmonary process.",
]


def build_biogpt_proxy(out, seed: int = 0, steps: int = 200):
    """Build and train the BioGPT proxy into `out` (a new folder); byte-for-byte the same for a seed on one CPU."""
    from pathlib import Path

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    start = config.bos_token_id
    seqs = [[start, *tokenizer(text, add_special_tokens=False)["input_ids"]] for text in PROXY_CORPUS]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, : len(seq)] = torch.tensor(seq)
    mask = (labels != -100).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):  # the whole corpus each step: it is 21 sentences
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    tokenizer.bos_token = "<|im_start|>"
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def biogpt_proxy_dir(seed: int = 0):
    """The BioGPT proxy's folder, built once per machine under the temp dir (written aside, then renamed, so that
    arms evaluated at the same time never read a half-written one)."""
    import contextlib
    import os
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.gettempdir()) / "medrl-models"
    final = root / f"biogpt-proxy-v{PROXY_VERSION}-seed{seed}"
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".biogpt-proxy-", dir=root))
    try:
        build_biogpt_proxy(scratch / "model", seed=seed)
        with contextlib.suppress(OSError):  # another process renamed its build first: same bytes, keep that one
            os.replace(scratch / "model", final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
