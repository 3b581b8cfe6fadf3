"""What keeps a running server up and inside its perimeter (issue 12): hot reload that survives a bad
generation, the Host allowlist, security headers, bounded work, starters once per generation."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from rag.serve.app import create_app
from rag.serve.metrics import Metrics
from rag.serve.middleware import Admission, SecurityHeaders
from rag.store.index import current_generation
from tests.conftest import LiveServer

QUESTION = "When did the CKFTA become law?"
http = httpx.Client(timeout=120)  # generous: a loaded CI machine opens a generation slowly


def publish_copy(root: Path, damage: bool) -> Path:
    """A new generation copied from the live one (its vectors file garbage when ``damage``), made live."""
    live = current_generation(root)
    new = root / f"gen-{int(live.name.split('-')[1]) + 1:06d}"
    shutil.copytree(live, new)
    manifest = json.loads((new / "manifest.json").read_text())
    (new / "manifest.json").write_text(json.dumps({**manifest, "generation": new.name}))
    if damage:
        (new / "vectors.faiss").write_bytes(b"not a faiss index")
    (root / "CURRENT.tmp").write_text(new.name, encoding="utf-8")
    (root / "CURRENT.tmp").replace(root / "CURRENT")
    return new


def failures(url: str) -> float:
    for line in http.get(f"{url}/metrics").text.splitlines():
        if line.startswith("rag_reload_failures_total"):
            return float(line.split()[-1])
    raise AssertionError("no rag_reload_failures_total metric")


class TestHotReload:
    def test_a_damaged_generation_never_breaks_a_working_server(self, tmp_path, bundled_index, bundled_settings,
                                                               query_embedder):
        root = tmp_path / "index"
        shutil.copytree(bundled_index, root)
        settings = bundled_settings.model_copy(update={"index_dir": root, "reload_backoff_s": 30.0})
        app = create_app(settings, query_embedder)
        state = app.state.service
        now = [1000.0]
        state.clock = lambda: now[0]
        with LiveServer(app) as server:
            first = http.get(f"{server.url}/readyz").json()["generation"]
            generator, selector = state.pipeline.answerer.generator, state.pipeline.answerer.selector
            bad = publish_copy(root, damage=True)
            for _ in range(5):  # every request still answers from the loaded generation
                r = http.post(f"{server.url}/api/answer", json={"question": QUESTION})
                assert r.status_code == 200 and "January 29, 2022" in r.json()["answer"]
            ready = http.get(f"{server.url}/readyz")
            body = ready.json()
            assert ready.status_code == 200 and body["generation"] == first
            assert bad.name in body["reload_error"] and "/" not in body["reload_error"]
            assert failures(server.url) == 1  # remembered: not re-opened per request or per /readyz

            now[0] += 31  # past the back-off: tried once more, fails again, backs off twice as long
            http.get(f"{server.url}/readyz")
            assert failures(server.url) == 2 and "60 s" in http.get(f"{server.url}/readyz").json()["reload_error"]

            shutil.copy(current_generation(bundled_index) / "vectors.faiss", bad / "vectors.faiss")  # mended
            now[0] += 61
            body = http.get(f"{server.url}/readyz").json()
            assert body["generation"] != first and "reload_error" not in body
            assert state.pipeline.index.generation == bad
            assert state.pipeline.answerer.generator is generator  # built once, reused across generations
            assert state.pipeline.answerer.selector is selector

    def test_new_generations_under_load_every_answer_succeeds(self, tmp_path, bundled_index, bundled_settings,
                                                             query_embedder):
        root = tmp_path / "index"
        shutil.copytree(bundled_index, root)
        settings = bundled_settings.model_copy(update={"index_dir": root})
        statuses: list[int] = []
        stop = threading.Event()

        def client(url: str) -> None:
            with httpx.Client(timeout=120) as own:
                while not stop.is_set():
                    r = own.post(f"{url}/api/answer", json={"question": QUESTION})
                    statuses.append(r.status_code if "January 29, 2022" in r.text else -r.status_code)

        with LiveServer(create_app(settings, query_embedder)) as server:
            threads = [threading.Thread(target=client, args=(server.url,)) for _ in range(3)]
            for t in threads:
                t.start()
            seen, published = set(), []
            for _ in range(4):
                before = len(statuses)
                new = publish_copy(root, damage=False).name
                published.append(new)
                # Answers keep coming while the switch happens, and after it, from the new generation.
                deadline = time.monotonic() + 120
                while (new not in seen or len(statuses) < before + 5) and time.monotonic() < deadline:
                    seen.add(http.get(f"{server.url}/readyz").json()["generation"])
                    time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join()
        assert set(published) <= seen and len(statuses) >= 20  # every new generation served, answers throughout
        assert set(statuses) == {200}


class TestPerimeter:
    def test_a_foreign_host_header_is_refused(self, live_server):
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
            r = http.get(f"{live_server.url}/api/search", params={"q": "embassy"}, headers={"Host": host})
            assert r.status_code == 400 and "host" in r.json()["detail"], host
        for host in ("localhost", f"localhost:{live_server.port}", f"127.0.0.1:{live_server.port}"):
            assert http.get(f"{live_server.url}/healthz", headers={"Host": host}).status_code == 200, host

    def test_allowed_hosts_setting_and_wildcard(self, bundled_settings, query_embedder):
        settings = bundled_settings.model_copy(update={"allowed_hosts": ["news.example.org"]})
        with LiveServer(create_app(settings, query_embedder)) as server:
            ok = http.get(f"{server.url}/healthz", headers={"Host": "news.example.org"})
            assert ok.status_code == 200
            assert http.get(f"{server.url}/healthz", headers={"Host": "localhost"}).status_code == 400  # not listed
            assert http.get(f"{server.url}/healthz").status_code == 200  # the address it listens on stays
        settings = bundled_settings.model_copy(update={"allowed_hosts": ["*"]})
        with LiveServer(create_app(settings, query_embedder)) as server:
            assert http.get(f"{server.url}/healthz", headers={"Host": "anything.example"}).status_code == 200

    def test_security_headers_on_the_page_the_api_and_errors(self, live_server):
        for r in (http.get(f"{live_server.url}/"), http.get(f"{live_server.url}/static/app.js"),
                  http.post(f"{live_server.url}/api/answer", json={"question": QUESTION}),
                  http.get(f"{live_server.url}/api/documents/no-such-doc")):
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
        page = http.get(f"{live_server.url}/").text
        assert "<script>" not in page and " on" not in page.split("<body>")[1].split(">")[0]  # no inline script

    def test_readyz_before_an_index_names_no_path(self, tmp_path, bundled_settings, query_embedder):
        settings = bundled_settings.model_copy(update={"index_dir": tmp_path / "secret-folder" / "index"})
        with LiveServer(create_app(settings, query_embedder)) as server:
            for r in (http.get(f"{server.url}/readyz"), http.get(f"{server.url}/api/search", params={"q": "x"})):
                assert r.status_code == 503 and "secret-folder" not in r.text and str(tmp_path) not in r.text


class TestBoundedWork:
    """Admission against a real asyncio app over ASGI: one slot, a request that holds it until released."""

    @staticmethod
    def held_app(release: asyncio.Event, started: list[str]):
        async def app(scope, receive, send):
            started.append(scope["path"])
            if scope["path"].endswith("/slow"):
                await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        return app

    def test_past_the_limit_503_with_retry_after_and_slots_are_given_back(self):
        async def scenario():
            release, started, metrics = asyncio.Event(), [], Metrics()
            app = Admission(self.held_app(release, started), limit=1, queue_timeout_s=0.2, deadline_s=30,
                            metrics=metrics)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                slow = asyncio.create_task(http.get("/api/slow"))
                await asyncio.sleep(0.05)
                busy = await http.get("/api/fast")
                health = await http.get("/healthz")  # never queued
                release.set()
                done = await slow
                after = await http.get("/api/fast")  # the slot came back
            return busy, health, done, after, metrics

        busy, health, done, after, metrics = asyncio.run(scenario())
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
        assert health.status_code == done.status_code == after.status_code == 200
        assert metrics.rejected.labels("busy")._value.get() == 1

    def test_no_response_by_the_deadline_is_504(self):
        async def scenario():
            release, started, metrics = asyncio.Event(), [], Metrics()
            app = Admission(self.held_app(release, started), limit=4, queue_timeout_s=1, deadline_s=0.2,
                            metrics=metrics)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
                late = await http.get("/api/slow")
                fine = await http.get("/api/fast")
            return late, fine

        late, fine = asyncio.run(scenario())
        assert late.status_code == 504 and "RAG_REQUEST_DEADLINE_S" in late.json()["detail"]
        assert fine.status_code == 200

    def test_docs_pages_keep_their_inline_bootstrap(self):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async def scenario():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=SecurityHeaders(app)),
                                         base_url="http://t") as http:
                return await http.get("/docs"), await http.get("/")
        docs, page = asyncio.run(scenario())
        assert "content-security-policy" not in docs.headers and docs.headers["x-frame-options"] == "DENY"
        assert "content-security-policy" in page.headers


def test_starters_are_computed_once_per_generation(monkeypatch, tmp_path, bundled_index, bundled_settings,
                                                   query_embedder):
    import rag.serve.reload as reload

    calls = []
    real = reload.starter_questions
    monkeypatch.setattr(reload, "starter_questions", lambda index: calls.append(index.generation) or real(index))
    root = tmp_path / "index"
    shutil.copytree(bundled_index, root)
    with LiveServer(create_app(bundled_settings.model_copy(update={"index_dir": root}), query_embedder)) as server:
        first = [http.get(f"{server.url}/api/starters").json() for _ in range(3)]
        publish_copy(root, damage=False)
        second = [http.get(f"{server.url}/api/starters").json() for _ in range(2)]
    assert len(calls) == 2 and calls[0] != calls[1]
    assert first[0] == first[2] == second[0] and first[0]["questions"]


@pytest.mark.parametrize("turns, kept", [(2, 2), (6, 6), (40, 6)])
def test_llm_history_is_the_newest_turns_under_the_token_budget(turns, kept):
    from rag.answer.generation import AnswerContext
    from rag.answer.generation.chat import answer_messages
    from rag.answer.prompts import PromptLibrary
    from rag.records import Turn
    from tests.conftest import PROMPTS

    history = [Turn("user" if i % 2 == 0 else "assistant", f"turn {i} about rice") for i in range(turns)]
    messages = answer_messages(AnswerContext("And then?", [], history), PromptLibrary(PROMPTS))
    assert [m["content"] for m in messages[1:-1]] == [t.content for t in history[-kept:]]
    # One long old turn ends the history there; the newer ones stay.
    history = [Turn("user", "rice " * 3000), *history[-2:]]
    messages = answer_messages(AnswerContext("And then?", [], history), PromptLibrary(PROMPTS), history_tokens=500)
    assert [m["content"] for m in messages[1:-1]] == [t.content for t in history[-2:]]


def test_a_stream_whose_client_hangs_up_is_closed_and_releases_what_it_holds():
    from rag.serve.events import threaded

    released = threading.Event()
    model_lock = threading.Lock()

    def answer():  # stands in for the llama.cpp stream: it holds the model for its whole life
        with model_lock:
            try:
                for i in range(1000):
                    yield {"event": "token", "data": str(i)}
            finally:
                released.set()

    async def client_reads_two_then_hangs_up():
        stream = threaded(answer())
        assert [await anext(stream), await anext(stream)] == [{"event": "token", "data": "0"},
                                                               {"event": "token", "data": "1"}]
        await stream.aclose()
        await asyncio.sleep(0)

    asyncio.run(client_reads_two_then_hangs_up())
    assert released.wait(5) and model_lock.acquire(timeout=1)
