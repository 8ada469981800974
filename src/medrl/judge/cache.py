"""The verdict cache: a judge asked the same thing twice answers from memory (and, with a folder, from disk).

Keys hash the backend, the model, the kind of question (yes_no, score) and the whole prompt, which holds the
template and the judged text: a changed template never meets an old verdict. Only hashes and verdicts are
stored, never text, and an unscorable reply (None) is not cached, so it is asked again next time.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from medrl.metrics import judge as prom


def cache_key(backend: str, model: str, kind: str, prompt: str) -> str:
    h = hashlib.sha256()
    for part in (backend, model, kind, prompt):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class VerdictCache:
    """Verdicts (ints: 1/0 for Yes/No, 1..10 for scores) by key, counting hits and misses."""

    def __init__(self, folder: str | Path | None = None):
        self.memory: dict[str, int] = {}
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if folder is not None:
            path = Path(folder).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            # WAL lets several evaluation processes (parallel arms) share one cache file.
            self._db = sqlite3.connect(path / "judge-cache.sqlite", timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            self._db.commit()

    def get_many(self, keys: list[str]) -> list[int | None]:
        with self._lock:
            found: list[int | None] = [self.memory.get(k) for k in keys]
            missing = sorted({k for k, v in zip(keys, found, strict=True) if v is None})
            if self._db is not None and missing:
                for start in range(0, len(missing), 500):
                    chunk = missing[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(f"SELECT key, value FROM verdicts WHERE key IN ({marks})", chunk)
                    self.memory.update(dict(rows.fetchall()))
                found = [self.memory.get(k) for k in keys]
            hit = sum(v is not None for v in found)
            self.hits += hit
            self.misses += len(keys) - hit
            prom.judge_cache(True, hit)
            prom.judge_cache(False, len(keys) - hit)
            return found

    def put_many(self, items: dict[str, int]) -> None:
        if not items:
            return
        with self._lock:
            self.memory.update(items)
            if self._db is not None:
                self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", list(items.items()))
                self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class CachedJudge:
    """Any judge behind the verdict cache: only prompts never answered before reach the backend."""

    def __init__(self, inner, backend: str, model: str, cache: VerdictCache):
        self.inner = inner
        self.name = inner.name
        self.proxy = inner.proxy
        self.backend = backend
        self.model = model
        self.cache = cache

    def _ask(self, kind: str, prompts: list[str], call) -> list[int | None]:
        keys = [cache_key(self.backend, self.model, kind, p) for p in prompts]
        found = self.cache.get_many(keys)
        todo: dict[str, str] = {}
        for key, prompt, value in zip(keys, prompts, found, strict=True):
            if value is None:
                todo.setdefault(key, prompt)  # the same prompt twice in one batch is asked once
        if todo:
            answers = call(list(todo.values()))
            fresh = {k: int(v) for k, v in zip(todo, answers, strict=True) if v is not None}
            self.cache.put_many(fresh)
            found = [v if v is not None else fresh.get(k) for k, v in zip(keys, found, strict=True)]
        unscorable = sum(v is None for v in found)
        prom.judge_verdicts(len(found) - unscorable, unscorable)
        return found

    def yes_no(self, prompts: list[str]) -> list[bool | None]:
        return [None if v is None else bool(v) for v in self._ask("yes_no", prompts, self.inner.yes_no)]

    def score(self, prompts: list[str]) -> list[int | None]:
        return self._ask("score", prompts, self.inner.score)

    def explain(self, *args) -> str:
        """The backend's account of its failures, with the fix (empty for backends that cannot fail that way)."""
        explain = getattr(self.inner, "explain", None)
        return explain(*args) if callable(explain) else ""

    def stats(self) -> dict:
        inner = self.inner.stats() if hasattr(self.inner, "stats") else {}
        return {**inner, "cache": {"hits": self.cache.hits, "misses": self.cache.misses}}

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()
        self.cache.close()
