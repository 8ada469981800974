"""A stand-in for vLLM's OpenAI-compatible server: a real HTTP/1.1 server (keep-alive, asyncio) on 127.0.0.1.

It is a stub of the model (no 7B judge runs here): it answers "Yes" to the Fig. 1 template and "7" to the
1-10 template, and can be told to fail the way a real server fails: 503 (with or without Retry-After), hang,
answer garbage, echo the request back (a misconfigured server or proxy), answer late, or reject the guided-choice
field. It counts every request it receives.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter


class JudgeServer:
    """Modes: ok | 503 | hang | garbage_json | garbage_text | echo | delay | reject_guided. `script` overrides the mode
    for the first requests, one entry each (e.g. ["503-retry-after", "ok"])."""

    def __init__(self, mode: str = "ok", delay_s: float = 0.0, retry_after: str = "1"):
        self.mode = mode
        self.delay_s = delay_s
        self.retry_after = retry_after
        self.script: list[str] = []
        self.reply = None  # optional: prompt -> reply text of an answered request, instead of "Yes" / "7"
        self.requests = 0
        self.by_mode: Counter[str] = Counter()
        self.arrivals: list[float] = []
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self._run, name="judge-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("judge stand-in server did not start")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown():
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- HTTP

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                with self._lock:
                    self.headers.append(headers)
                status, extra, payload = await self._respond(method, path, body)
                if status == 0:  # hang: never answer; the client gives up
                    await asyncio.sleep(3600)
                head_out = (
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\nContent-Type: application/json\r\n"
                )
                head_out += "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n"
                writer.write(head_out.encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _next_mode(self) -> str:
        with self._lock:
            self.requests += 1
            self.arrivals.append(time.monotonic())
            mode = self.script.pop(0) if self.script else self.mode
            self.by_mode[mode] += 1
            return mode

    async def _respond(self, method: str, path: str, raw: bytes) -> tuple[int, dict, bytes]:
        if method == "GET" and path.endswith("/models"):
            return 200, {}, json.dumps({"object": "list", "data": [{"id": "stand-in"}]}).encode()
        mode = self._next_mode()
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {}, b'{"error": "bad json"}'
        with self._lock:
            self.bodies.append(body)
        if mode == "503":
            return 503, {}, b'{"error": "unavailable"}'
        if mode == "503-retry-after":
            return 503, {"Retry-After": self.retry_after}, b'{"error": "unavailable"}'
        if mode == "hang":
            return 0, {}, b""
        if mode == "delay":
            await asyncio.sleep(self.delay_s)
        if mode == "garbage_json":
            return 200, {}, b"<html>upstream proxy says hello</html>"
        if mode == "reject_guided" and ("structured_outputs" in body or "guided_choice" in body):
            return 400, {}, b'{"error": "Unrecognized request argument supplied: structured_outputs"}'
        prompt = body["messages"][-1]["content"] if "messages" in body else body.get("prompt", "")
        text = "purple monkey dishwasher" if mode == "garbage_text" else ("7" if "Score:" in prompt else "Yes")
        if mode == "echo":
            text = prompt
        elif mode == "ok" and self.reply is not None:
            text = self.reply(prompt)
        if "messages" in body:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        reply = {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [choice]}
        return 200, {}, json.dumps(reply).encode()


def main() -> None:
    """Serve in a process of its own (the benchmarks: a judge server is another process, as vLLM is). Prints the
    port, then serves until stdin closes."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    with JudgeServer(mode=args.mode, delay_s=args.delay) as server:
        print(server.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
