"""Similarity of the reasoning to the reference answer (Appendix B.1): a cross-encoder's score when the model is
one (the paper: cross-encoder/stsb-roberta-base, 0..1), else the cosine of sentence embeddings (-1..1).
"""

from __future__ import annotations

import json
from pathlib import Path

from medrl.judge.embedding import PACKAGED, embedding_model_path

PAPER_MODEL = "cross-encoder/stsb-roberta-base"


class MetricUnavailable(RuntimeError):
    """A metric's model cannot be had here; the message names the setting and the fix."""


def resolve_model_dir(name: str, setting: str) -> Path:
    """A local directory for a model name: the packaged embedding model, a directory, a store URI, or a hub id
    (downloaded, or from the local cache when HF_HUB_OFFLINE=1)."""
    if name == PACKAGED:
        return Path(embedding_model_path(name))
    if name.startswith(("file://", "s3://")):
        from medrl.models.load import local_dir

        return Path(local_dir(name))
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name))
    except Exception as err:  # offline and not cached, unknown id, no network: all mean "not here"
        raise MetricUnavailable(
            f"{setting}={name}: the model is not available here ({type(err).__name__}); put it in the local "
            f"Hugging Face cache or a hub mirror, or set {setting} to a local directory"
        ) from None


def is_cross_encoder(path: Path) -> bool:
    """A cross-encoder scores a pair in one pass: sentence-transformers marks it so, or (older checkpoints) it is a
    sequence classifier with no sentence-transformers modules."""
    st_config = path / "config_sentence_transformers.json"
    if st_config.is_file() and json.loads(st_config.read_text()).get("model_type") == "CrossEncoder":
        return True
    if (path / "modules.json").is_file():
        return False
    config = path / "config.json"
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


class SimilarityScorer:
    def __init__(self, name: str, kind: str = "auto", device: str = "auto", batch_size: int = 16):
        from medrl.models.causal_lm import pick_device

        path = resolve_model_dir(name, "evaluate.similarity_model")
        self.name = name
        self.kind = ("cross-encoder" if is_cross_encoder(path) else "bi-encoder") if kind == "auto" else kind
        self.batch_size = batch_size
        device = pick_device(device)
        if self.kind == "cross-encoder":
            from sentence_transformers import CrossEncoder

            self.model = CrossEncoder(str(path), device=device)
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(path), device=device)

    @property
    def proxy(self) -> bool:
        return not (self.kind == "cross-encoder" and PAPER_MODEL.split("/")[-1] in self.name.lower())

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """One similarity per (reasoning, reference) pair."""
        if not pairs:
            return []
        if self.kind == "cross-encoder":
            out = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
            return [float(x) for x in out]
        kwargs = {"batch_size": self.batch_size, "convert_to_tensor": True, "normalize_embeddings": True}
        a = self.model.encode([p[0] for p in pairs], show_progress_bar=False, **kwargs)
        b = self.model.encode([p[1] for p in pairs], show_progress_bar=False, **kwargs)
        return [float(x) for x in (a * b).sum(dim=1)]
