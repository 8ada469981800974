"""A re-tried evaluate step whose judge was down: it scores the stored answers again (no generation: this run has
no model to generate with), completes the thinking reward, and once complete it is left alone."""

import json

from medrl import store
from medrl.config import dump_config, load_config
from medrl.data.records import Record, write_jsonl
from medrl.evaluate.run import prediction_row
from medrl.evaluate.score import score_predictions
from medrl.models.tiny import build_tokenizer
from medrl.store.layout import RunLayout
from medrl.study import arm as arm_steps
from tests.support.judge_server import JudgeServer

RECORDS = [
    Record(id=str(i), question="Where is the lesion?", choices=["upper left", "upper right"], answer="upper left",
           answer_label="A", split="test")
    for i in range(6)
]  # fmt: skip


def test_incomplete_thinking_reward_is_finished_on_retry(tmp_path):
    with JudgeServer(mode="503") as server:
        root = store.normalize(str(tmp_path / "store"))
        overrides = [
            f"store={root}",
            "evaluate.similarity_model=null",
            "evaluate.judge.backend=openai",
            f"evaluate.judge.url={server.url}",
            "evaluate.judge.model=stand-in",
            "evaluate.judge.retries=0",
        ]
        cfg = load_config(preset="demo", overrides=overrides, arms=["zero-shot"])
        run = RunLayout.create(root, cfg.experiment, "r1")
        store.write_text(run.config, dump_config(cfg))
        with store.commit_dir(run.data) as out:
            write_jsonl(out / "train.jsonl", [])
            write_jsonl(out / "test.jsonl", RECORDS)
            (out / "summary.json").write_text(json.dumps({"train": 0, "test": len(RECORDS)}))

        # The first attempt: the judge answers 503 to everything.
        tokenizer = build_tokenizer()
        texts = [f"<think>The lesion {i} is in the upper left.</think><answer>A</answer>" for i in range(6)]
        rows = [prediction_row(r, t, tokenizer) for r, t in zip(RECORDS, texts, strict=True)]
        metrics = score_predictions(cfg, RECORDS, rows)
        assert metrics["thinking_reward"]["status"] == "unscored"  # scored nothing: no number, scored again
        paths = run.arm("zero-shot")
        store.write_text(paths.predictions, "".join(json.dumps(r) + "\n" for r in rows))
        store.write_text(paths.metrics, json.dumps({"arm": "zero-shot", "metrics": metrics}))

        server.mode = "ok"
        sent = server.requests
        assert arm_steps.evaluate_in_run(run.uri, "zero-shot") == paths.metrics
        doc = json.loads(store.read_text(paths.metrics))
        assert doc["metrics"]["thinking_reward"]["status"] == "ok" and doc["metrics"]["thinking_reward"]["mean"] == 7
        assert doc["n"] == 6 and doc["metrics"]["accuracy"]["mean"] == 1.0
        stored = [json.loads(line) for line in store.read_text(paths.predictions).splitlines()]
        assert [r["completion"] for r in stored] == texts  # the same answers, scored again
        assert [r["thinking_reward"] for r in stored] == [7] * 6
        assert server.requests == sent + 6

        assert arm_steps.evaluate_in_run(run.uri, "zero-shot") == paths.metrics  # complete now: nothing is asked
        assert server.requests == sent + 6
