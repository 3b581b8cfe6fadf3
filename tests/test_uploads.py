"""Uploads and deletes over HTTP (README "Adding and removing articles") against a real uvicorn server.

Every server here has its own small index in a temporary folder: uploads never touch the session's
``bundled_index``.
"""

from __future__ import annotations

import json

import httpx
import pytest

from rag.ingest.pipeline import add_documents, ingest, remove_documents
from rag.records import Document
from rag.serve.app import create_app
from rag.serve.uploads import safe_name
from rag.settings import Settings
from tests.conftest import LiveServer, write_corpus

LIGHTHOUSE = ("---\ntitle: Kep lighthouse repainted\nsource: example.org\npublished: 2025-03-04\n---\n\n"
              "The lighthouse at Kep was painted blue in 1931 by the harbour master Sok Dara. "
              "Fishermen say the colour makes it easy to see against the hills at dusk.\n")
FERRY = ("Ferry to Koh Rong\n\nA new ferry service to Koh Rong started carrying 400 passengers a day in May. "
         "The crossing takes forty-five minutes from Sihanoukville.\n")
UPLOAD_LIMIT = 150_000


def make_server(tmp_path, embedder, chunker, query_embedder, **settings) -> LiveServer:
    root = tmp_path / "index"
    ingest([write_corpus(tmp_path / "articles")], root, embedder, chunker, sentence_embedder=query_embedder)
    config = Settings(index_dir=root, eval_reports_dir=tmp_path / "reports", max_upload_bytes=UPLOAD_LIMIT,
                      **settings)
    return LiveServer(create_app(config, query_embedder, ingest_embedder=embedder))


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder, chunker, query_embedder):
    with make_server(tmp_path_factory.mktemp("uploads"), embedder, chunker, query_embedder) as live:
        yield live


def upload(url: str, files: list[tuple[str, bytes]], **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/api/documents", files=[("files", (name, data)) for name, data in files],
                      timeout=120, **kwargs)


def doc_ids(url: str) -> set[str]:
    return {d["doc_id"] for d in httpx.get(f"{url}/api/documents", params={"limit": 1000}).json()["documents"]}


def ask(url: str, question: str) -> dict:
    return httpx.post(f"{url}/api/answer", json={"question": question}, timeout=60).json()


class TestUpload:
    def test_md_and_txt_land_and_the_next_answer_cites_them(self, server):
        r = upload(server.url, [("kep-lighthouse.md", LIGHTHOUSE.encode()), ("ferry.txt", FERRY.encode())])
        assert r.status_code == 200, r.text
        report = r.json()
        assert [f["name"] for f in report["files"]] == ["kep-lighthouse.md", "ferry.txt"]
        assert all(f["status"] == "ingested" and not f["skipped"] for f in report["files"])
        assert set(report["added"]) == {"uploads/kep-lighthouse", "uploads/ferry"} and report["published"]
        assert report["documents_total"] == 6 and report["generation"]
        assert {"uploads/kep-lighthouse", "uploads/ferry", "rice", "rail"} <= doc_ids(server.url)  # nothing removed
        doc = httpx.get(f"{server.url}/api/documents/uploads/kep-lighthouse").json()
        assert doc["title"] == "Kep lighthouse repainted" and doc["source"] == "example.org"
        assert doc["published"].startswith("2025-03-04")
        answer = ask(server.url, "When was the lighthouse at Kep painted blue?")
        assert not answer["abstained"] and "1931" in answer["answer"]
        assert "uploads/kep-lighthouse" in {c["doc_id"] for c in answer["citations"]}
        ferry = ask(server.url, "How many passengers does the Koh Rong ferry carry?")
        assert "400" in ferry["answer"] and ferry["citations"][0]["doc_id"] == "uploads/ferry"

    def test_the_same_file_again_is_unchanged_and_publishes_nothing(self, server):
        first = upload(server.url, [("again.md", b"# Again\n\nThe market in Kampot sells pepper.\n")]).json()
        second = upload(server.url, [("again.md", b"# Again\n\nThe market in Kampot sells pepper.\n")]).json()
        assert first["published"] and not second["published"] and second["unchanged"] == 1
        assert second["files"][0]["documents"] == [{"doc_id": "uploads/again", "status": "unchanged"}]
        changed = upload(server.url, [("again.md", b"# Again\n\nThe market in Kampot sells salt.\n")]).json()
        assert changed["updated"] == ["uploads/again"] and changed["files"][0]["documents"][0]["status"] == "updated"

    def test_json_records_land_with_their_own_ids(self, server):
        records = [{"id": "wire-42", "title": "Dam opens", "text": "The Lower Sesan dam began producing power "
                    "in 2017, officials in Stung Treng said.", "published": "2017-11-20", "source": "Reuters"},
                   {"id": "empty-one", "title": "Nothing", "text": "  "}]
        r = httpx.post(f"{server.url}/api/documents", json={"records": records}, timeout=120)
        assert r.status_code == 200, r.text
        files = r.json()["files"]
        assert files[0] == {"name": "records[0]", "status": "ingested", "skipped": [],
                            "documents": [{"doc_id": "wire-42", "status": "added"}]}
        assert files[1]["status"] == "skipped" and "empty" in files[1]["skipped"][0]
        answer = ask(server.url, "When did the Lower Sesan dam begin producing power?")
        assert "2017" in answer["answer"] and answer["citations"][0]["doc_id"] == "wire-42"
        assert answer["citations"][0]["source"] == "Reuters"

    def test_a_bad_file_is_reported_skipped_while_the_good_one_lands(self, server):
        r = upload(server.url, [("good-news.md", b"# Good news\n\nThe Tonle Sap ferry resumed on Friday.\n"),
                                ("broken.json", b"{not json"), ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00"),
                                ("nul.txt", b"abc\x00def")])
        assert r.status_code == 200, r.text
        files = {f["name"]: f for f in r.json()["files"]}
        assert files["good-news.md"]["status"] == "ingested"
        assert files["broken.json"]["status"] == "skipped" and "invalid JSON" in files["broken.json"]["skipped"][0]
        assert "unsupported file type .png" in files["photo.png"]["skipped"][0]
        assert "binary" in files["nul.txt"]["skipped"][0]
        assert r.json()["skipped"] == 3 and "uploads/good-news" in doc_ids(server.url)
        assert not any("rag-upload-" in reason for f in files.values() for reason in f["skipped"])  # no temp paths

    def test_path_traversal_names_are_sanitised(self, server, tmp_path):
        r = upload(server.url, [("../../../etc/evil.md", b"# Evil\n\nA harmless article about goats.\n"),
                                ("..\\..\\win.txt", b"Win\n\nAnother harmless article about sheep.\n")])
        assert r.status_code == 200, r.text
        assert [f["name"] for f in r.json()["files"]] == ["evil.md", "win.txt"]
        assert {"uploads/evil", "uploads/win"} <= doc_ids(server.url)
        assert not any("/.." in d or d.startswith("..") for d in doc_ids(server.url))

    def test_two_files_with_one_doc_id_keep_the_first(self, server):
        r = upload(server.url, [("twin.md", b"# Twin\n\nThe first twin.\n"), ("twin.txt", b"The second twin.\n")])
        files = r.json()["files"]
        assert files[0]["status"] == "ingested" and files[1]["status"] == "skipped"
        assert "duplicate doc_id 'uploads/twin' (also in twin.md)" in files[1]["skipped"][0]

    @pytest.mark.parametrize("declared", [True, False])
    def test_over_the_upload_limit_is_413_and_nothing_lands(self, server, declared):
        big = b"# Big\n\n" + b"The weather was fine. " * (UPLOAD_LIMIT // 20)
        if declared:
            r = upload(server.url, [("big.md", big)])
        else:  # streamed (chunked, no Content-Length): counted as it arrives
            body = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="big.md"\r\n\r\n'
                    + big + b"\r\n--xyz--\r\n")

            def chunks():
                for i in range(0, len(body), 16384):
                    yield body[i:i + 16384]
            r = httpx.post(f"{server.url}/api/documents", content=chunks(), timeout=60,
                           headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 413 and "RAG_MAX_UPLOAD_BYTES" in r.json()["detail"]
        assert "uploads/big" not in doc_ids(server.url)

    def test_under_the_upload_limit_a_body_past_64_kib_is_fine(self, server):
        text = b"# Long read\n\n" + b"Farmers planted mango trees along the river. " * 2000  # ~90 kB
        assert upload(server.url, [("long-read.md", text)]).status_code == 200

    @pytest.mark.parametrize("request_kwargs, fragment", [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, "multipart/form-data"),
        ({"json": {"records": []}}, "records"),
        ({"json": {"records": [{"title": "no id", "text": "x"}]}}, "records.0.id"),
        ({"content": b"{bad", "headers": {"content-type": "application/json"}}, "JSON"),
        ({"data": {"other": "x"}, "files": [("other", ("a.md", b"x"))]}, "files"),
    ])
    def test_malformed_requests_are_4xx_with_a_readable_message(self, server, request_kwargs, fragment):
        r = httpx.post(f"{server.url}/api/documents", timeout=30, **request_kwargs)
        assert r.status_code in (415, 422), r.text
        assert fragment in r.json()["detail"]

    def test_two_uploads_at_once_both_land(self, server):
        from concurrent.futures import ThreadPoolExecutor

        bodies = [("north.md", b"# North\n\nThe northern road was paved.\n"),
                  ("south.md", b"# South\n\nThe southern port was dredged.\n")]
        with ThreadPoolExecutor(2) as pool:  # the second waits for the first's publish
            replies = list(pool.map(lambda file: upload(server.url, [file]), bodies))
        assert [r.status_code for r in replies] == [200, 200]
        assert {"uploads/north", "uploads/south"} <= doc_ids(server.url)

    def test_more_than_100_files_is_400(self, server):
        r = upload(server.url, [(f"f{i}.md", b"# F\n\nText.\n") for i in range(101)])
        assert r.status_code == 400 and "Maximum number of files is 100" in r.json()["detail"]

    def test_while_another_process_holds_the_index_lock_it_is_503_with_retry_after(self, server):
        from rag.store.writer import ingest_lock

        settings = server.server.config.app.state.service.settings
        with ingest_lock(settings.index_dir):  # as a running `rag ingest` would
            r = upload(server.url, [("locked.md", b"# Locked\n\nWaits.\n")])
            gone = httpx.delete(f"{server.url}/api/documents/rice", timeout=60)
        assert r.status_code == 503 and r.headers["Retry-After"] and "another ingest" in r.json()["detail"]
        assert gone.status_code == 503 and "rice" in doc_ids(server.url)
        assert upload(server.url, [("locked.md", b"# Locked\n\nWaits.\n")]).status_code == 200

    def test_an_upload_from_another_sites_page_is_refused(self, server):
        r = upload(server.url, [("csrf.md", b"# CSRF\n\nPlanted.\n")], headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "uploads/csrf" not in doc_ids(server.url)
        same = upload(server.url, [("same-site.md", b"# Same\n\nFine.\n")], headers={"Origin": server.url})
        assert same.status_code == 200


class TestDelete:
    def test_delete_is_204_then_the_document_is_gone_from_listing_and_answers(self, server):
        upload(server.url, [("gone-soon.md", b"# Bridge\n\nThe Mekong bridge at Stung Treng cost 60 million "
                                             b"dollars and opened in 2015.\n")])
        assert "Stung Treng" in ask(server.url, "How much did the Mekong bridge at Stung Treng cost?")["answer"]
        r = httpx.delete(f"{server.url}/api/documents/uploads/gone-soon", timeout=60)
        assert r.status_code == 204 and r.content == b""
        assert "uploads/gone-soon" not in doc_ids(server.url) and "rice" in doc_ids(server.url)
        assert httpx.get(f"{server.url}/api/documents/uploads/gone-soon").status_code == 404
        answer = ask(server.url, "How much did the Mekong bridge at Stung Treng cost?")
        assert "uploads/gone-soon" not in {c["doc_id"] for c in answer["citations"]}

    def test_delete_unknown_is_404(self, server):
        r = httpx.delete(f"{server.url}/api/documents/no-such-doc", timeout=60)
        assert r.status_code == 404 and "no-such-doc" in r.json()["detail"]


def test_with_api_keys_both_need_one(tmp_path, embedder, chunker, query_embedder):
    with make_server(tmp_path, embedder, chunker, query_embedder, api_keys=["s3cret"]) as live:
        files = [("keyed.md", b"# Keyed\n\nA keyed article.\n")]
        r = upload(live.url, files)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert httpx.delete(f"{live.url}/api/documents/rice").status_code == 401
        key = {"Authorization": "Bearer s3cret"}
        assert upload(live.url, files, headers=key).status_code == 200
        assert httpx.delete(f"{live.url}/api/documents/rice", headers=key, timeout=60).status_code == 204
        listed = httpx.get(f"{live.url}/api/documents", headers=key).json()["documents"]
        assert {d["doc_id"] for d in listed} == {"uploads/keyed", "rail", "bank", "temple"}


def test_an_upload_to_a_server_with_no_index_builds_one(tmp_path, embedder, query_embedder):
    config = Settings(index_dir=tmp_path / "fresh", eval_reports_dir=tmp_path / "reports")
    with LiveServer(create_app(config, query_embedder, ingest_embedder=embedder)) as live:
        assert httpx.get(f"{live.url}/readyz").status_code == 503
        assert upload(live.url, [("first.md", b"# First\n\nThe first article of a new index.\n")]).status_code == 200
        assert httpx.get(f"{live.url}/readyz").json()["documents"] == 1
        assert httpx.delete(f"{live.url}/api/documents/nothing-here", timeout=60).status_code == 404


class TestPipeline:
    """``add_documents`` / ``remove_documents`` themselves: add only, never remove what they were not given."""

    def test_add_upserts_and_remove_takes_only_what_it_is_given(self, tmp_path, embedder, chunker):
        root = tmp_path / "index"
        ingest([write_corpus(tmp_path / "articles")], root, embedder, chunker)
        report = add_documents([Document("new", "New", "A brand new article."), Document("rice", "Rice", "Changed.")],
                               root, embedder, chunker)
        assert report.added == ["new"] and report.updated == ["rice"] and report.removed == []
        assert report.documents_total == 5 and report.published
        gone = remove_documents(["bank", "not-there"], root, embedder, chunker)
        assert gone.removed == ["bank"] and gone.documents_total == 4
        assert remove_documents(["not-there"], root, embedder, chunker).published is False

    def test_an_index_that_would_need_a_rebuild_is_refused(self, tmp_path, embedder, chunker):
        from rag.ingest.chunking import Chunker
        from rag.ingest.pipeline import CannotUpdate

        root = tmp_path / "index"
        ingest([write_corpus(tmp_path / "articles")], root, embedder, chunker)
        other = Chunker(120, 0.1, model_token_count=embedder.count_tokens, model_max_tokens=embedder.max_tokens)
        with pytest.raises(CannotUpdate, match="--rebuild"):
            add_documents([Document("x", "X", "Text.")], root, embedder, other)


@pytest.mark.parametrize("raw, safe", [
    ("../../etc/passwd.md", "passwd.md"), ("C:\\Users\\me\\Rapport final.TXT", "Rapport-final.TXT"),
    ("...", "upload"), ("", "upload"), (".hidden.md", "hidden.md"), ("a/b/../c.txt", "c.txt"),
    ("naïve café.md", "naïve-café.md"), ("x" * 300 + ".md", "x" * 117 + ".md"), ("semi;colon$.md", "semi-colon.md"),
])
def test_safe_name(raw, safe):
    assert safe_name(raw) == safe
    assert json.dumps(safe_name(raw))  # a plain string, fit for a doc_id


def test_schema_fuzzing_of_the_write_routes_finds_no_server_error(tmp_path, embedder, chunker, query_embedder):
    """schemathesis on POST /api/documents and DELETE /api/documents/{doc_id}, against this test's own index."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).with_name("schemathesis")
    cli = str(beside) if beside.exists() else shutil.which("schemathesis")
    if cli is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    with make_server(tmp_path, embedder, chunker, query_embedder) as live:
        done = subprocess.run([cli, "run", f"{live.url}/openapi.json", "--checks", "not_a_server_error",
                               "--max-examples", "15", "--seed", "1",
                               "--include-operation-id", "upload_api_documents_post",
                               "--include-operation-id", "delete_api_documents__doc_id__delete"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:]
        assert "Tested: 2" in done.stdout
        assert "rice" in doc_ids(live.url)  # fuzzed ids never matched a real article
