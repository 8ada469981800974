"""Similarity of the reasoning to the reference answer (Appendix B.1): a cross-encoder's score when the model is
one (the paper: cross-encoder/stsb-roberta-base, 0..1), else the cosine of sentence embeddings (-1..1).
"""

from __future__ import annotations

import json
from pathlib import Path

from medrl.judge.embedding import PACKAGED, embedding_model_path
from medrl.models.causal_lm import pick_device
from medrl.models.load import local_dir

PAPER_MODEL = "cross-encoder/stsb-roberta-base"


class MetricUnavailable(RuntimeError):
    """A metric's model cannot be had here; the message names the setting and the fix."""


def unavailable_error(name: str, setting: str, err: BaseException) -> MetricUnavailable:
    return MetricUnavailable(
        f"{setting}={name}: the model is not available here ({type(err).__name__}); put it in the local Hugging "
        f"Face cache or a hub mirror, or set {setting} to a local directory"
    )


def model_source(name: str) -> str:
    """What to load: the packaged embedding model's folder, a store URI's local copy, or the name as given (a
    directory, or a hub id that the loaders fetch file by file)."""
    if name == PACKAGED:
        return embedding_model_path(name)
    if name.startswith(("file://", "s3://")):
        return local_dir(name)
    return name


def _model_file(source: str, filename: str) -> Path | None:
    """One small file of a model, from its folder or the hub (cache); None when it has none."""
    if Path(source).expanduser().is_dir():
        path = Path(source).expanduser() / filename
        return path if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, filename))
    except Exception:  # absent from the repository, or from the cache when offline: either way, not there
        return None


def is_cross_encoder(source: str | Path) -> bool:
    """A cross-encoder scores a pair in one pass: sentence-transformers marks it so, or (older checkpoints such as
    cross-encoder/stsb-roberta-base) it is a sequence classifier with no sentence-transformers modules."""
    source = str(source)
    st_config = _model_file(source, "config_sentence_transformers.json")
    if st_config and json.loads(st_config.read_text()).get("model_type") == "CrossEncoder":
        return True
    if _model_file(source, "modules.json"):
        return False
    config = _model_file(source, "config.json")
    architectures = (json.loads(config.read_text()).get("architectures") or []) if config else []
    return any(a.endswith("ForSequenceClassification") for a in architectures)


class SimilarityScorer:
    def __init__(self, name: str, kind: str = "auto", device: str = "auto", batch_size: int = 16):
        source = model_source(name)
        self.name = name
        self.batch_size = batch_size
        device = pick_device(device)
        try:
            self.kind = ("cross-encoder" if is_cross_encoder(source) else "bi-encoder") if kind == "auto" else kind
            if self.kind == "cross-encoder":
                from sentence_transformers import CrossEncoder

                self.model = CrossEncoder(source, device=device)
            else:
                from sentence_transformers import SentenceTransformer

                self.model = SentenceTransformer(source, device=device)
        except Exception as err:  # not cached offline, unknown id, unreadable files: the model is not here
            raise unavailable_error(name, "evaluate.similarity_model", err) from None

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
