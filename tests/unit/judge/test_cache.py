"""The verdict cache: repeated questions never reach the backend, hits and misses are counted exactly, verdicts
survive on disk without any judged text, and an unscorable reply is asked again."""

from medrl.config import KeywordJudgeConfig
from medrl.judge import build_judge, semantic_prompt, thinking_prompt
from medrl.judge.cache import CachedJudge, VerdictCache, cache_key


class CountingJudge:
    """A backend that records what reaches it; says Yes to even-length texts, and cannot judge 'unsure'."""

    name = "counting"
    proxy = True

    def __init__(self):
        self.asked: list[str] = []

    def yes_no(self, prompts):
        self.asked += prompts
        return [None if "unsure" in p else len(p) % 2 == 0 for p in prompts]

    def score(self, prompts):
        self.asked += prompts
        return [None if "unsure" in p else 1 + len(p) % 10 for p in prompts]


def test_second_pass_is_served_from_the_cache():
    inner = CountingJudge()
    judge = CachedJudge(inner, "counting", "m", VerdictCache())
    prompts = [semantic_prompt(f"lesion {i}") for i in range(20)]
    first = judge.yes_no(prompts)
    assert len(inner.asked) == 20
    assert judge.yes_no(prompts) == first
    assert len(inner.asked) == 20
    assert judge.stats()["cache"] == {"hits": 20, "misses": 20}


def test_duplicates_in_one_batch_are_asked_once():
    inner = CountingJudge()
    judge = CachedJudge(inner, "counting", "m", VerdictCache())
    prompt = semantic_prompt("same text")
    assert judge.yes_no([prompt] * 5) == [len(prompt) % 2 == 0] * 5
    assert inner.asked == [prompt]


def test_unscorable_replies_are_not_cached():
    inner = CountingJudge()
    judge = CachedJudge(inner, "counting", "m", VerdictCache())
    prompts = [semantic_prompt("unsure"), semantic_prompt("lesion")]
    assert judge.yes_no(prompts)[0] is None
    judge.yes_no(prompts)
    assert inner.asked.count(prompts[0]) == 2 and inner.asked.count(prompts[1]) == 1


def test_key_separates_backend_model_kind_and_template():
    text = "The lesion is in the left lung."
    keys = {
        cache_key("openai", "a", "yes_no", semantic_prompt(text)),
        cache_key("hf", "a", "yes_no", semantic_prompt(text)),
        cache_key("openai", "b", "yes_no", semantic_prompt(text)),
        cache_key("openai", "a", "score", semantic_prompt(text)),
        cache_key("openai", "a", "yes_no", thinking_prompt("q", "r", text)),
    }
    assert len(keys) == 5
    assert cache_key("openai", "a", "yes_no", semantic_prompt(text)) in keys


def test_yes_no_and_score_do_not_share_entries():
    inner = CountingJudge()
    judge = CachedJudge(inner, "counting", "m", VerdictCache())
    prompt = thinking_prompt("q", "r", "reasoning text")
    judge.yes_no([prompt])
    assert judge.score([prompt]) == [1 + len(prompt) % 10]
    assert len(inner.asked) == 2


SECOND_PROCESS = """
import json, sys
from medrl.judge import semantic_prompt, thinking_prompt
from medrl.judge.cache import CachedJudge, VerdictCache
from tests.unit.judge.test_cache import CountingJudge

secret = sys.argv[2]
prompts = [semantic_prompt(secret), thinking_prompt("Where?", "liver", secret)]
inner = CountingJudge()
again = CachedJudge(inner, "counting", "m", VerdictCache(sys.argv[1]))
verdicts = again.yes_no(prompts[:1]) + again.score(prompts[1:])
print(json.dumps({"verdicts": verdicts, "asked": len(inner.asked), "cache": again.stats()["cache"]}))
"""


def test_disk_cache_survives_a_new_process_and_holds_no_text(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    secret = "Patient John Doe has a mass in the liver"
    prompts = [semantic_prompt(secret), thinking_prompt("Where?", "liver", secret)]
    first = CachedJudge(CountingJudge(), "counting", "m", VerdictCache(tmp_path))
    expected = first.yes_no(prompts[:1]) + first.score(prompts[1:])
    first.close()

    # Another interpreter: nothing of this one's memory, only the file on disk.
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    done = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(tmp_path), secret],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    second = json.loads(done.stdout.strip().splitlines()[-1])
    assert second == {"verdicts": expected, "asked": 0, "cache": {"hits": 2, "misses": 0}}
    for path in tmp_path.iterdir():
        assert b"John" not in path.read_bytes() and b"liver" not in path.read_bytes()


def test_build_judge_caches_every_backend(tmp_path):
    judge = build_judge(KeywordJudgeConfig(cache_dir=str(tmp_path)))
    prompts = [semantic_prompt("lesion in the lung"), semantic_prompt("banana")]
    assert judge.yes_no(prompts) == [True, False]
    assert judge.yes_no(prompts) == [True, False]
    assert judge.stats()["cache"] == {"hits": 2, "misses": 2}
    assert (tmp_path / "judge-cache.sqlite").is_file()
