"""The laptop demo's arms as a study runs them (stage functions, without kfp): a run repeated with the same seeds on
the same machine gives the same weights and the same predictions, question for question."""

import pytest

from medrl.config import DataConfig, load_config
from medrl.data.prep import prepare
from medrl.evaluate import evaluate_model
from medrl.train import train_arm


def _sft_then_grpo(cfg, base, data, root):
    """Train sft, then sft-grpo from it; return each arm's prediction rows and weights digest."""
    preds, digests = {}, {}
    summary = train_arm(cfg, "sft", data, str(base), root / "sft", root / "sft.work")
    digests["sft"] = summary["weights_sha256"]
    preds["sft"], _ = evaluate_model(cfg, str(root / "sft"), data)
    summary = train_arm(cfg, "sft-grpo", data, str(root / "sft"), root / "grpo", root / "grpo.work")
    digests["sft-grpo"] = summary["weights_sha256"]
    preds["sft-grpo"], _ = evaluate_model(cfg, str(root / "grpo"), data)
    return preds, digests


@pytest.mark.slow
def test_same_seed_same_machine_same_predictions(tiny_model, tmp_path):
    # a few steps of each: determinism does not need a trained model, only the same sampling and updates
    cfg = load_config(
        preset="demo",
        overrides=[
            "data.train_size=64", "data.test_size=16", "arms.sft.epochs=1", "arms.sft.max_steps=4",
            "arms.sft-grpo.max_steps=3", "evaluate.similarity_model=null",
        ],
    )  # fmt: skip
    data = tmp_path / "data"
    prepare(DataConfig(**cfg.data.model_dump()), data)
    first, first_weights = _sft_then_grpo(cfg, tiny_model, data, tmp_path / "first")
    second, second_weights = _sft_then_grpo(cfg, tiny_model, data, tmp_path / "second")
    assert first_weights == second_weights
    for arm in ("sft", "sft-grpo"):
        assert [r["completion"] for r in first[arm]] == [r["completion"] for r in second[arm]], arm
    # what repeats is a trained model's output, not the untouched model's
    untouched, _ = evaluate_model(cfg, str(tiny_model), data)
    assert [r["completion"] for r in untouched] != [r["completion"] for r in first["sft"]]
