"""The `rag` command (DESIGN.md "CLI contract")."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from rag.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Grounded Q&A over news articles: every claim cited to an exact span.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

IndexOpt = Annotated[Optional[Path], typer.Option("--index", help="Index folder [default: index/default].")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _settings(index: Path | None = None) -> Settings:
    settings = Settings()
    return settings.model_copy(update={"index_dir": index}) if index else settings


def _progress_printer():
    """A rich progress bar on a terminal; plain lines (every ~10%) otherwise."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress("embedding", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err)
        task = bar.add_task("embed", total=None)

        def update(done: int, total: int) -> None:
            if not bar.live.is_started:
                bar.start()
            bar.update(task, completed=done, total=total)
            if done >= total:
                bar.stop()
        return update
    last = [-1]

    def plain(done: int, total: int) -> None:
        step = int(10 * done / max(total, 1))
        if step != last[0]:
            last[0] = step
            print(f"embedded {done}/{total} chunks", file=sys.stderr, flush=True)
    return plain


@app.command()
def ingest(paths: Annotated[Optional[list[Path]], typer.Argument(help="Files and folders [default: data/articles].")] = None,
           index: IndexOpt = None,
           rebuild: Annotated[bool, typer.Option(help="Ignore the existing index and build from scratch.")] = False) -> None:
    """Index articles (.md .txt .html .json .jsonl); re-runs only re-embed what changed."""
    from rag.ingest import ingest as run_ingest
    from rag.pipeline import build_chunker, build_embedder

    settings = _settings(index)
    paths = paths or [settings.articles_dir]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        _fail(f"no such file or folder: {', '.join(missing)}")
    embedder = build_embedder(settings)
    try:
        report = run_ingest(paths, settings.index_dir, embedder, build_chunker(settings, embedder),
                            batch_size=settings.embedding_batch_size, rebuild=rebuild, progress=_progress_printer())
    except RuntimeError as exc:
        _fail(str(exc))
    for skipped in report.skipped:
        err.print(f"[yellow]skipped[/] {skipped.path}: {skipped.reason}", highlight=False)
    out.print(report.summary(), highlight=False)


@app.command()
def search(query: str, k: Annotated[int, typer.Option("-k", help="Number of passages.")] = 5,
           index: IndexOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the passages that best match QUERY."""
    from rag.pipeline import build_embedder, open_retriever

    settings = _settings(index)
    retriever = _open(settings, build_embedder(settings), open_retriever)
    passages = retriever.search(query, k)
    if as_json:
        print(json.dumps({"passages": [p.to_dict() for p in passages]}, ensure_ascii=False, indent=2))
        return
    for rank, p in enumerate(passages, start=1):
        snippet = " ".join(p.text.split())
        snippet = snippet if len(snippet) <= 300 else snippet[:297] + "…"
        out.print(f"[bold]{rank}. {p.title}[/]  [dim]{p.doc_id} [{p.start}:{p.end}] score {p.score:.3f}[/]",
                  highlight=False)
        out.print(f"   {snippet}", highlight=False, markup=False)


def _open(settings: Settings, embedder, opener):
    from rag.index import IndexIncompatible, IndexNotFound

    try:
        return opener(settings, embedder)
    except (IndexNotFound, IndexIncompatible) as exc:
        _fail(str(exc))


@app.command()
def stats(index: IndexOpt = None) -> None:
    """Print the index manifest: documents, chunks, model, size, built at."""
    from rag.index import Index, IndexIncompatible, IndexNotFound

    settings = _settings(index)
    try:
        idx = Index.open(settings.index_dir)
    except (IndexNotFound, IndexIncompatible) as exc:
        _fail(str(exc))
    data = dict(idx.manifest.__dict__, index=str(settings.index_dir), size_bytes=idx.size_bytes())
    print(json.dumps(data, indent=2))
