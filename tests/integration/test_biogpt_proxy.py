"""The demo's perplexity model: tiny:biogpt-proxy, a tiny LM trained here on clinical sentences, scores fluent
reasoning far below scrambled text and is marked as a proxy of BioGPT (so the demo has no n/a cell)."""

from medrl.evaluate.perplexity import PerplexityScorer


def test_the_proxy_prefers_fluent_reasoning_and_says_it_is_a_proxy():
    scorer = PerplexityScorer("tiny:biogpt-proxy", device="cpu")
    fluent, scrambled, noise = scorer.score(
        [
            "The bright round lesion lies in the lower left part of the MRI image.",
            "lesion lower the bright image MRI of round part left in lies The",
            "xq zz kk qq lesion lesion lesion",
        ]
    )
    # observed 1.2, 1810 and 11674: half the gap on a log scale is still a factor of 40
    assert fluent < 3.0
    assert scrambled > 40 * fluent and noise > 40 * fluent
    assert scorer.proxy
