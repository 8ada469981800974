"""DPO through TRL's DPOTrainer on vision preference pairs built from multiple-choice records
(medrl.train.pairs: chosen = the correct option in the answer format, rejected = a wrong option).

The reference model is a frozen copy of the starting model; `dpo.beta` and `dpo.loss_type` are TRL's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medrl.config import ConfigError, DpoArm, StudyConfig
from medrl.data.images import require_8bit
from medrl.data.prompt import prompt_messages
from medrl.data.records import read_records
from medrl.models.load import load_model
from medrl.train.common import Recipe, training_image
from medrl.train.pairs import preference_pairs

log = logging.getLogger("medrl")


def preference_dataset(cfg: StudyConfig, arm: str, data_dir: Path):
    """Rows with the conversational `prompt`, the `image` and the `chosen` / `rejected` assistant turns."""
    from datasets import Dataset, Image

    records = read_records(data_dir, "train")
    spec = cfg.arms[arm]
    assert isinstance(spec, DpoArm), "train_arm picks this recipe by method"
    pairs, counts = preference_pairs(records, spec.dpo, seed=spec.seed)
    skipped = {reason: n for reason, n in counts.items() if reason != "pairs"}
    if skipped:
        log.info("dpo: %d pairs; records without a pair: %s", counts["pairs"], skipped)
    if not pairs:
        raise ConfigError(
            f"arms.{arm}.method=dpo: no preference pairs in {data_dir} (records without one: {skipped}); DPO needs "
            "multiple-choice records whose answer is one of their choices"
        )
    rows: list[dict[str, Any]] = []  # a dataset row: prompt turns, image path, chosen and rejected turns
    for pair in pairs:
        rec = records[pair["record"]]
        rows.append(
            {
                "prompt": prompt_messages(rec, cfg.prompt),
                "image": training_image(rec.images, data_dir, f"row {pair['record'] + 1} of the train split"),
                "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            }
        )
    require_8bit((r["image"] for r in rows if r["image"]), "the train split")
    return Dataset.from_list(rows).cast_column("image", Image())


def recipe(cfg: StudyConfig, arm: str, data_dir: Path, init_ref: str) -> Recipe:
    """DPO: TRL's DPOConfig and DPOTrainer, with a frozen copy of the starting model as the reference."""
    from trl import DPOConfig, DPOTrainer

    spec = cfg.arms[arm]
    assert isinstance(spec, DpoArm), "train_arm picks this recipe by method"
    return Recipe(
        DPOConfig,
        DPOTrainer,
        preference_dataset(cfg, arm, data_dir),
        spec.per_device_batch_size,
        # max_length None: never cut image tokens out of a prompt
        config_kwargs={"beta": spec.dpo.beta, "loss_type": [spec.dpo.loss_type], "max_length": None},
        trainer_kwargs={"ref_model": load_model(init_ref, cfg.model)},
    )
