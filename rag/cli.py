"""The `rag` command (README "Using it"): ingest, search, ask, chat, serve, eval, eval-beir, stats.

Heavy parts (torch, FAISS, FastAPI) are imported inside the commands that need them, so `rag --help`
stays fast. Every command fails the same way: a ``UserError`` becomes ``error: <message>``, exit 1.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from rag.errors import UserError
from rag.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Grounded Q&A over news articles: every claim cited to an exact span.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

IndexOpt = Annotated[Path | None, typer.Option("--index", help="Index folder \\[default: index/default].")]


def _fail(message: str, code: int = 1) -> None:
    """The one way a command fails: ``error: <message>`` on stderr and a non-zero exit."""
    err.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    raise typer.Exit(code)


def command(name: str | None = None) -> Callable[[Callable], Callable]:
    """``app.command`` whose errors a user can fix (``UserError``) end in ``_fail``, not a traceback."""
    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserError as exc:
                _fail(str(exc))
        return app.command(name)(run)
    return register


def _settings(index: Path | None = None) -> Settings:
    settings = Settings()
    return settings.model_copy(update={"index_dir": index}) if index else settings


def _progress_printer():
    """A rich progress bar per stage on a terminal; plain lines (every ~10%) otherwise."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("embedding {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), console=err)
        tasks: dict[str, int] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
                bar.start()
            bar.update(tasks[what], completed=done, total=total)
            if done >= total:
                bar.stop()
        return update
    last: dict[str, int] = {}

    def plain(what: str, done: int, total: int) -> None:
        step = int(10 * done / max(total, 1))
        if step != last.get(what):
            last[what] = step
            print(f"embedded {done}/{total} {what}", file=sys.stderr, flush=True)
    return plain


@command()
def ingest(paths: Annotated[list[Path] | None, typer.Argument(help="Files and folders \\[default: data/articles].")] = None,
           index: IndexOpt = None,
           rebuild: Annotated[bool, typer.Option(help="Ignore the existing index and build from scratch.")] = False,
           feed: Annotated[list[str] | None, typer.Option(
               "--feed", metavar="URL_OR_FILE", help="Add the new entries of an RSS/Atom feed, their pages fetched "
               "politely (repeatable); nothing else in the index is removed.")] = None,
           engine: Annotated[str, typer.Option(help="local, or ray: loading, chunking and embedding as Ray Data "
                                               "stages (pip install -e '.[ray]').")] = "local",
           ray_address: Annotated[str | None, typer.Option(help="Ray cluster to run on \\[default: a local Ray "
                                                           "started for this ingest].")] = None) -> None:
    """Index articles (.md .txt .html .json .jsonl) or feeds (--feed); re-runs only re-embed what changed."""
    from rag.ingest.pipeline import ingest_paths

    settings = _settings(index)
    if feed:
        if paths or rebuild:
            _fail("--feed adds a feed's entries to the index; ingest PATHs (or --rebuild) in a separate run")
        from rag.ingest.feeds import ingest_feeds

        feed_report = ingest_feeds(settings, feed, progress=_progress_printer())
        for summary in feed_report.feeds:
            out.print(escape(summary.line()), highlight=False)
        report = feed_report.ingest
    else:
        paths = paths or [settings.articles_dir]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            _fail(f"no such file or folder: {', '.join(missing)}")
        report = ingest_paths(settings, paths, rebuild=rebuild, progress=_progress_printer(), engine=engine,
                              ray_address=ray_address)
    for skipped in report.skipped:
        err.print(f"[yellow]skipped[/] {escape(str(skipped.path))}: {escape(skipped.reason)}", highlight=False)
    for warning in report.warnings:
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    out.print(report.summary(), highlight=False)


SourceOpt = Annotated[list[str] | None, typer.Option("--source", help="Only articles from this source (repeatable).")]
AfterOpt = Annotated[str | None, typer.Option("--after", help="Only articles published on or after (ISO date).")]
BeforeOpt = Annotated[str | None, typer.Option("--before", help="Only articles published on or before (ISO date).")]
DocOpt = Annotated[list[str] | None, typer.Option("--doc", help="Only this article (doc_id, repeatable).")]


def _filters(source: list[str] | None, after: str | None, before: str | None, doc: list[str] | None):
    """The filters the options ask for, or None; a bad date is a UserError (``error: ...``, exit 1)."""
    from rag.filters import Filters

    return Filters.parse(source, after, before, doc) or None


@command()
def search(query: str, k: Annotated[int, typer.Option("-k", help="Number of passages.")] = 5,
           index: IndexOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False,
           source: SourceOpt = None, after: AfterOpt = None, before: BeforeOpt = None, doc: DocOpt = None) -> None:
    """Print the passages that best match QUERY."""
    from rag.answer.pipeline import open_retriever
    from rag.embedding.factory import build_query_embedder

    settings = _settings(index)
    filters = _filters(source, after, before, doc)
    passages = open_retriever(settings, build_query_embedder(settings)).search(query, k, filters=filters)
    if as_json:
        print(json.dumps({"passages": [p.to_dict() for p in passages]}, ensure_ascii=False, indent=2))
        return
    for rank, p in enumerate(passages, start=1):
        snippet = " ".join(p.text.split())
        snippet = snippet if len(snippet) <= 300 else snippet[:297] + "…"
        out.print(f"[bold]{rank}. {escape(p.title)}[/]  [dim]{escape(p.doc_id)} \\[{p.start}:{p.end}] score {p.score:.3f}[/]",
                  highlight=False)
        out.print(f"   {snippet}", highlight=False, markup=False)


@command()
def stats(index: IndexOpt = None) -> None:
    """Print the index manifest: documents, chunks, model, size, built at, stored sentence vectors."""
    from rag.store.index import Index
    from rag.store.sentence_vectors import SentenceVectors

    settings = _settings(index)
    idx = Index.open(settings.index_dir, milvus_uri=settings.milvus_uri)

    sentences = SentenceVectors.load(idx.generation)
    data = dict(idx.manifest.__dict__, index=str(settings.index_dir), size_bytes=idx.size_bytes(),
                vector_store={**(idx.manifest.vector_store or {"kind": "faiss"}), "search": idx.vectors.describe(),
                              "vectors": len(idx.vectors)},
                sentence_vectors={"count": len(sentences), "model": sentences.model} if sentences else None)
    print(json.dumps(data, indent=2))


def _pipeline(settings: Settings):
    from rag.answer.pipeline import open_pipeline
    from rag.embedding.factory import build_query_embedder

    return open_pipeline(settings, build_query_embedder(settings))


def _print_answer(answer) -> None:
    style = "yellow" if answer.abstained else "bold"
    out.print(f"[{style}]{escape(answer.answer)}[/]", highlight=False)
    if answer.citations:
        out.print("\n[dim]Closest passages (they do not answer it):[/]" if answer.abstained else "\n[dim]Sources:[/]")
    for c in answer.citations:
        quote = " ".join(c.text.split())
        quote = quote if len(quote) <= 240 else quote[:237] + "…"
        out.print(f"  \\[{c.n}] [bold]{escape(c.title)}[/] [dim]({escape(c.doc_id)} {c.start}:{c.end})[/]", highlight=False)
        out.print(f"      “{quote}”", highlight=False, markup=False)


@command()
def ask(question: str, index: IndexOpt = None, k: Annotated[int | None, typer.Option("-k")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the /api/answer object.")] = False,
        source: SourceOpt = None, after: AfterOpt = None, before: BeforeOpt = None, doc: DocOpt = None) -> None:
    """Answer QUESTION from the indexed articles, with cited sources."""
    if not question.strip():
        _fail("the question is empty")
    filters = _filters(source, after, before, doc)
    answer = _pipeline(_settings(index)).answerer.answer(question, top_k=k, filters=filters)
    if as_json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    else:
        _print_answer(answer)


@command()
def chat(index: IndexOpt = None, source: SourceOpt = None, after: AfterOpt = None, before: BeforeOpt = None,
         doc: DocOpt = None) -> None:
    """A terminal conversation that keeps history (empty line or Ctrl-D to quit)."""
    from rag.answer.generation import GeneratorUnavailable
    from rag.records import Turn

    filters = _filters(source, after, before, doc)
    answerer = _pipeline(_settings(index)).answerer
    history: list[Turn] = []
    out.print("[dim]Ask about the articles. Follow-up questions use the conversation. Empty line quits.[/]")
    while True:
        try:
            question = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if not question:
            break
        try:
            answer = answerer.answer(question, history, filters=filters)
        except GeneratorUnavailable as exc:  # the conversation goes on; the next turn may reach the server
            err.print(f"[red]{escape(str(exc))}[/]", highlight=False)
            continue
        if answer.standalone_question != question:
            out.print(f"[dim](searching for: {escape(answer.standalone_question)})[/]", highlight=False)
        _print_answer(answer)
        history += [Turn("user", question), Turn("assistant", answer.answer)]


@command("eval")
def eval_(files: Annotated[list[Path] | None, typer.Argument(help="Question files \\[default: eval/questions.jsonl].")] = None,
          index: IndexOpt = None,
          report: Annotated[Path | None, typer.Option("--report", help="Report folder \\[default: eval/reports].")] = None,
          check: Annotated[bool, typer.Option("--check", help="Exit 1 when a metric misses its threshold.")] = False,
          thresholds: Annotated[Path | None, typer.Option("--thresholds", help="Thresholds JSON for --check "
                                                          "\\[default: eval/thresholds.json].")] = None,
          compare: Annotated[tuple[Path, Path] | None, typer.Option("--compare", help="Compare two report JSONs.")] = None,
          plot: Annotated[bool, typer.Option(help="Write a PNG of accuracy by type and latency.")] = True,
          calibrate_: Annotated[bool, typer.Option("--calibrate", help="Sweep the abstention threshold.")] = False,
          from_feedback: Annotated[Path | None, typer.Option(
              "--from-feedback", metavar="OUT.jsonl",
              help="Write the ratings stored beside --index as eval records to review; asks nothing.")] = None,
          force: Annotated[bool, typer.Option("--force", help="With --from-feedback: replace an existing OUT.")] = False,
          ) -> None:
    """Score the eval question set: retrieval, answers, citations, abstention, latency (or --from-feedback)."""
    from datetime import datetime

    from rag.eval import evaluation as ev

    if from_feedback:
        if files:
            _fail("--from-feedback writes records from the stored ratings; it takes no question files")
        _export_feedback(_settings(index), from_feedback, force)
        return
    if compare:
        a, b = (json.loads(p.read_text(encoding="utf-8")) for p in compare)
        print(ev.compare(a, b))
        return
    settings = _settings(index)
    if calibrate_:
        settings = settings.model_copy(update={"abstain_threshold": -1.0})
    files = files or [Path("eval/questions.jsonl")]
    if not all(f.is_file() for f in files):
        _fail(f"no question file {next(f for f in files if not f.is_file())}: pass FILE ... or run in the repository")
    try:
        cases = ev.load_cases(files)
    except (OSError, ValueError, KeyError) as exc:
        _fail(f"cannot read the question set: {exc}")
    pipeline = _pipeline(settings)
    rows = ev.Evaluator(pipeline.answerer, pipeline.retriever, pipeline.index).run(cases)
    if calibrate_:
        best, sweep = ev.calibrate(rows)
        print(f"{'threshold':>9} {'accuracy':>9} {'abst.recall':>11} {'false abst.':>11}")
        for t, acc, rec, false in sweep:
            print(f"{t:>9} {acc:>9} {rec:>11} {false:>11}{'  <- best' if t == best else ''}")
        return
    generator = pipeline.answerer.generator.name
    data = ev.build_report(rows, pipeline.index, generator, settings, files)
    folder = report or settings.eval_reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    stem = datetime.now().strftime("%Y%m%d-%H%M%S")
    plot_name = f"{stem}.png" if plot and ev.write_plot(data, folder / f"{stem}.png") else None
    (folder / f"{stem}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    (folder / f"{stem}.md").write_text(ev.markdown_report(data, plot_name), encoding="utf-8")
    from rich.table import Table

    table = Table(title=f"rag eval: {len(rows)} questions, generator {generator}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in data["metrics"].items():
        table.add_row(name, str(value))
    out.print(table)
    out.print(f"report: {folder / stem}.json / .md", highlight=False)
    if check:
        bounds = json.loads((thresholds or settings.eval_thresholds).read_text(encoding="utf-8"))
        problems = ev.check(data["metrics"], bounds)
        for p in problems:
            err.print(f"[red]below threshold:[/] {escape(p)}", highlight=False)
        if problems:
            raise typer.Exit(1)
        out.print(f"all {len(bounds)} thresholds met")


def _export_feedback(settings: Settings, target: Path, force: bool) -> None:
    """`rag eval --from-feedback OUT`: one record per rated answer; an existing OUT may hold a reviewer's edits."""
    import sqlite3

    from rag.eval.feedback import FeedbackStore, export

    store = FeedbackStore.beside(settings.index_dir)
    if not store.path.is_file():
        _fail(f"no feedback for {settings.index_dir} yet: ratings sent to `rag serve` (POST /api/feedback) "
              f"are stored in {store.path}")
    try:
        written = export(store, target, overwrite=force)
    except FileExistsError:
        _fail(f"{target} exists (it may hold reviewed records): choose another file or add --force to replace it")
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror or exc}")
    except sqlite3.Error as exc:
        _fail(f"cannot read {store.path}: {exc}")
    finally:
        store.close()
    good, bad = written.by_rating[1], written.by_rating[-1]
    out.print(f"wrote {written.records} record{'' if written.records == 1 else 's'} to {escape(str(target))} "
              f"({good} rated good, {bad} rated bad), each marked \"review\": \"unreviewed\"", highlight=False)


@command()
def serve(index: IndexOpt = None, host: Annotated[str | None, typer.Option(help="\\[default: 127.0.0.1]")] = None,
          port: Annotated[int | None, typer.Option(help="\\[default: 8000]")] = None) -> None:
    """Serve the chat UI at / and the HTTP API; builds the default index first if it is missing."""
    import uvicorn

    from rag.embedding.factory import build_query_embedder
    from rag.ingest.pipeline import ingest_paths
    from rag.serve.app import create_app
    from rag.store.index import current_generation

    settings = _settings(index)
    if current_generation(settings.index_dir) is None:
        if index is not None and index != Settings().index_dir:
            _fail(f"no index at {settings.index_dir}: build it with `rag ingest PATH --index {settings.index_dir}`")
        err.print(f"no index yet: indexing {settings.articles_dir} …", highlight=False)
        report = ingest_paths(settings, [settings.articles_dir], progress=_progress_printer())
        err.print(report.summary(), highlight=False)
    embedder = build_query_embedder(settings)
    _hint_sentence_vectors(settings, embedder)
    settings = settings.model_copy(update={"host": host or settings.host, "port": port or settings.port})
    app_ = create_app(settings, embedder)  # the Host allowlist includes the address it listens on
    host, port = settings.host, settings.port
    err.print(f"chat UI on http://{host}:{port}/  ·  API docs on http://{host}:{port}/docs", highlight=False)
    if host in {"0.0.0.0", "::"} and "*" not in settings.allowed_hosts:
        err.print(f"listening on every address: answering only Host names {', '.join(settings.allowed_hosts)} "
                  "(set RAG_ALLOWED_HOSTS to this machine's names)", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _hint_sentence_vectors(settings: Settings, embedder) -> None:
    """Say when answers will embed sentences because the index has no vectors from this model."""
    from rag.store.index import current_generation
    from rag.store.sentence_vectors import SentenceVectors

    generation = current_generation(settings.index_dir)
    if generation and SentenceVectors.load_for(generation, embedder) is None:
        err.print(f"note: {settings.index_dir} has no evidence sentence vectors for this model; answers will embed "
                  f"a few sentences each (about twice the CPU). `rag ingest … --index {settings.index_dir}` adds them.",
                  highlight=False)


@command("eval-beir")
def eval_beir(folder: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/.")],
              index: IndexOpt = None,
              split: Annotated[str, typer.Option(help="qrels split to score.")] = "test",
              mode: Annotated[str | None, typer.Option(help="dense | bm25 | hybrid \\[default: setting].")] = None,
              as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """nDCG@10, Recall@10/100 and MRR@10 on a BEIR-layout folder (builds or updates its index)."""
    from rag.answer.pipeline import open_retriever
    from rag.embedding.factory import build_query_embedder
    from rag.eval import beir
    from rag.ingest.pipeline import ingest_paths
    from rag.retrieval.fusion import RetrievalMode
    from rag.store.index import current_generation

    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / needed).is_file():
            _fail(f"{folder} is not a BEIR folder: {needed} is missing")
    settings = _settings(index or Path("index") / f"beir-{folder.resolve().name}")
    if mode:
        try:
            settings = settings.model_copy(update={"retrieval_mode": RetrievalMode.from_str(mode).value})
        except ValueError:
            _fail("--mode must be dense, bm25 or hybrid")
    verb = "building" if current_generation(settings.index_dir) is None else "updating"
    err.print(f"{verb} {settings.index_dir} from {folder / 'corpus.jsonl'} …", highlight=False)
    # Incremental: an unchanged corpus costs a hash per document; an edited one is re-embedded where it
    # changed, so scores never come from a stale index. Retrieval only: no evidence sentences to embed.
    report = ingest_paths(settings, [folder / "corpus.jsonl"], progress=_progress_printer(), sentences=False)
    err.print(report.summary(), highlight=False)
    retriever = open_retriever(settings, build_query_embedder(settings))
    result = beir.evaluate(retriever, beir.load_queries(folder), beir.load_qrels(folder, split))
    result = {"dataset": folder.resolve().name, "split": split, "mode": settings.retrieval_mode, **result}
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{result['dataset']} ({split}, {result['queries']} queries, {settings.retrieval_mode})")
    for name in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_p50_ms", "latency_p95_ms"):
        table.add_row(name, str(result[name]))
    out.print(table)
