from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.ingest.documents import load_documents, parse_text_article


class TestBadFilesAreSkippedWithTheirReason:
    BOMB = "---\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
           "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ntitle: t\n---\n\nBody.\n"

    @pytest.mark.parametrize(("name", "content", "reason"), [
        ("impossible-date.md", "---\ntitle: T\npublished: 2024-02-30\n---\n\nBody.\n", "day is out of range"),
        ("nested.json", "[" * 100_000, "cannot be read"),
        ("alias-bomb.md", BOMB, "aliases"),
    ])
    def test_one_bad_file_is_skipped_and_the_rest_load(self, tmp_path: Path, name: str, content: str, reason: str):
        (tmp_path / name).write_text(content)
        (tmp_path / "good.md").write_text("---\ntitle: Good\n---\n\nFine text.\n")
        docs, skipped = load_documents([tmp_path])
        assert [d.doc_id for d in docs] == ["good"]
        assert len(skipped) == 1 and skipped[0].path.endswith(name) and reason in skipped[0].reason


class TestTextArticles:
    def test_front_matter_gives_title_source_and_metadata(self, tmp_path: Path):
        (tmp_path / "a.md").write_text('---\ntitle: "T"\nsource: s\npublished: 2024-01-02\nauthor: X\n---\n\nBody.\n')
        [doc], skipped = load_documents([tmp_path])
        assert (doc.doc_id, doc.title, doc.source, doc.published, doc.text) == ("a", "T", "s", "2024-01-02", "Body.")
        assert doc.metadata == {"author": "X"} and skipped == []

    def test_first_line_is_title_when_short_and_followed_by_blank_line(self):
        assert parse_text_article("Headline\n\nBody line.\nMore.", "x")[:2] == ("Headline", "Body line.\nMore.")

    @pytest.mark.parametrize("raw", ["One line only", "First line\nsecond line directly", "x" * 300 + "\n\nbody"])
    def test_no_title_line_keeps_whole_text_and_falls_back_to_id(self, raw: str):
        title, body, _ = parse_text_article(raw, "fallback")
        assert title == "fallback" and body == raw

    def test_doc_id_is_relative_path_without_extension(self, tmp_path: Path):
        (tmp_path / "sport").mkdir()
        (tmp_path / "sport" / "199.txt").write_text("Head\n\nBody")
        [doc], _ = load_documents([tmp_path])
        assert doc.doc_id == "sport/199"

    def test_latin1_file_decodes_to_the_right_characters(self, tmp_path: Path):
        text = "Mutu fee\n\nThe transfer fee for Mutu, a £15.8m signing from Parma, café owners said."
        (tmp_path / "l1.txt").write_bytes(text.encode("latin-1"))
        [doc], skipped = load_documents([tmp_path])
        assert "a £15.8m signing" in doc.text and "café" in doc.text and skipped == []

    def test_crlf_and_bom_are_normalised(self, tmp_path: Path):
        (tmp_path / "w.txt").write_bytes("\ufeffTitle\r\n\r\nLine one.\r\nLine two.\r\n".encode("utf-8"))
        [doc], _ = load_documents([tmp_path])
        assert (doc.title, doc.text) == ("Title", "Line one.\nLine two.")


class TestStructuredFormats:
    def test_jsonl_beir_records_keep_their_ids(self, tmp_path: Path):
        rows = [{"_id": "4983", "title": "Micro", "text": "Alpha."}, {"id": "b-2", "title": "", "text": "Beta."}]
        (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        docs, _ = load_documents([tmp_path / "corpus.jsonl"])
        assert [(d.doc_id, d.title, d.text) for d in docs] == [("4983", "Micro", "Alpha."), ("b-2", "b-2", "Beta.")]

    def test_json_array_with_metadata(self, tmp_path: Path):
        rec = {"id": "x", "title": "X", "text": "Body.", "published": "2020", "metadata": {"k": 1}}
        (tmp_path / "x.json").write_text(json.dumps([rec]))
        [doc], _ = load_documents([tmp_path])
        assert doc.published == "2020" and doc.metadata == {"k": 1}

    def test_html_article_body_and_title_extracted(self, tmp_path: Path):
        para = "Phnom Penh and Seoul signed a new agreement on trade and investment cooperation today. " * 4
        html = (f"<html><head><title>Trade pact signed</title></head><body><nav>Home | About</nav>"
                f"<article><h1>Trade pact signed</h1><p>{para}</p><p>{para}</p></article>"
                f"<footer>Copyright</footer></body></html>")
        (tmp_path / "page.html").write_text(html)
        [doc], _ = load_documents([tmp_path])
        assert doc.title == "Trade pact signed" and "Phnom Penh and Seoul signed" in doc.text
        assert "Home | About" not in doc.text


class TestBadInput:
    def test_bad_files_are_skipped_with_a_reason_and_the_rest_loads(self, tmp_path: Path):
        (tmp_path / "good.txt").write_text("Good\n\nFine text.")
        (tmp_path / "empty.txt").write_text("   \n")
        (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00")
        (tmp_path / "broken.json").write_text("{not json")
        (tmp_path / "noid.jsonl").write_text('{"title": "t", "text": "x"}\n')
        (tmp_path / "image.png").write_bytes(b"\x89PNG")
        (tmp_path / "README.TXT").write_text("About this dataset")
        docs, skipped = load_documents([tmp_path])
        assert [d.doc_id for d in docs] == ["good"]
        reasons = {Path(s.path.split("#")[0]).name: s.reason for s in skipped}
        assert set(reasons) == {"empty.txt", "blob.txt", "broken.json", "noid.jsonl", "image.png", "README.TXT"}
        assert "binary" in reasons["blob.txt"] and "JSON" in reasons["broken.json"]
        assert "empty" in reasons["empty.txt"] and "id" in reasons["noid.jsonl"]

    def test_duplicate_doc_ids_keep_the_first(self, tmp_path: Path):
        (tmp_path / "a.md").write_text("A md\n\nFirst.")
        (tmp_path / "a.txt").write_text("A txt\n\nSecond.")
        docs, skipped = load_documents([tmp_path])
        assert [d.text for d in docs] == ["First."] and "duplicate" in skipped[0].reason

    def test_bundled_articles_load_with_titles(self):
        from tests.conftest import ARTICLES

        docs, skipped = load_documents([ARTICLES])
        assert skipped == [] and len(docs) == 2
        assert all(d.title and d.title != d.doc_id and d.source for d in docs)


def test_mostly_non_ascii_legacy_text_is_decoded_by_detection(tmp_path: Path):
    text = ("Новости\n\nПравительство Камбоджи объявило об открытии посольства в Исламабаде. "
            "Это решение укрепит торговые связи между двумя странами и расширит сотрудничество. ") * 3
    (tmp_path / "ru.txt").write_bytes(text.encode("cp1251"))
    [doc], _ = load_documents([tmp_path])
    assert "посольства в Исламабаде" in doc.text
