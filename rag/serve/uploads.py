"""Uploads and deletes over HTTP: ``POST /api/documents`` and ``DELETE /api/documents/{doc_id}``.

An upload is spooled to a temporary folder and read by the ingest loaders, exactly as `rag ingest`
reads files, then added to the live index (``rag.ingest.pipeline.add_documents``: an upsert that
removes nothing, published atomically); the server opens the new generation before it answers, so
the next question sees the articles. Policies (README "Adding and removing articles"):

- doc_ids: a file's is ``uploads/<its sanitised name without the extension>`` (so an upload never
  replaces an article of the ingested folder by accident); a JSON record's, in the body or in an
  uploaded ``.json``/``.jsonl``, is its ``id`` as given. A doc_id the index holds is updated.
- One write at a time: a second upload or delete waits for the running one; an ingest held by
  another process (`rag ingest`) gives a 503 with ``Retry-After``.
- A file or record that cannot be read is skipped and reported with the loader's reason; the rest land.
- A browser upload from another site's page is refused (``refuse_cross_site``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from rag.ingest.documents import Limits, iter_documents
from rag.ingest.pipeline import CannotUpdate, IngestReport, add_documents, remove_documents
from rag.records import Document, Skipped
from rag.serve.api_models import RecordsUpload, UploadReport
from rag.serve.deps import RETRY_AFTER_S, authorised, service
from rag.serve.reload import ServiceState, without_paths
from rag.store.index import IndexNotFound
from rag.store.vectors import VectorPolicy
from rag.store.writer import IndexLocked

router = APIRouter(dependencies=[Depends(authorised)])
UPLOAD_FOLDER = "uploads"  # the doc_id prefix of uploaded files
MAX_FILES = 100  # per request; each is a form part Starlette keeps open until the ingest ends
MAX_NAME_CHARS = 120
_UNSAFE = re.compile(r"[^\w.\-]+")


def _records_schema() -> dict:
    """``RecordsUpload``'s JSON schema with ``RecordIn`` inline: the route reads its body itself, so
    FastAPI puts neither model in the OpenAPI components for a ``$ref`` to point at."""
    schema = RecordsUpload.model_json_schema()
    record = schema.pop("$defs")["RecordIn"]
    schema["properties"]["records"]["items"] = record
    return schema


_BODY_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": _records_schema()}}}}


def safe_name(raw: str, fallback: str = "upload") -> str:
    """A client's file name made safe to write and to be a doc_id: its last path part, word
    characters, ``.`` and ``-`` only, no leading dot, at most ``MAX_NAME_CHARS``.

    Example:
        >>> safe_name("../../etc/passwd.md"), safe_name("C:\\\\x\\\\Rapport final.TXT"), safe_name("...")
        ('passwd.md', 'Rapport-final.TXT', 'upload')
    """
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("-", name).strip(".-")
    stem, dot, suffix = name.rpartition(".")
    if dot and len(suffix) <= 10:  # keep the extension the loader is chosen by
        return f"{stem[:MAX_NAME_CHARS - len(suffix) - 1].strip('.-') or fallback}.{suffix}"
    return name[:MAX_NAME_CHARS] or fallback


@dataclass(frozen=True)
class Upload:
    """One file or record, written under its own ``root`` as ``rag ingest ROOT`` would read it."""

    name: str  # as the report names it
    root: Path


@dataclass
class Loaded:
    """What the loaders made of one upload."""

    upload: Upload
    documents: list[Document]
    skipped: list[str]


async def spool_files(request: Request, folder: Path) -> list[Upload]:
    """The multipart field ``files``, each copied to ``folder/<i>/uploads/<safe name>``."""
    form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
    parts = form.getlist("files")
    if not parts:
        raise HTTPException(422, "files: send one or more files in the multipart field 'files'")
    uploads = []
    for i, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            raise HTTPException(422, f"files: part {i + 1} is not a file")
        name = safe_name(part.filename or "")
        target = folder / str(i) / UPLOAD_FOLDER / name
        target.parent.mkdir(parents=True)
        await asyncio.to_thread(_copy, part, target)
        uploads.append(Upload(name, folder / str(i)))
    return uploads


def _copy(part: UploadFile, target: Path) -> None:
    with target.open("wb") as out:
        shutil.copyfileobj(part.file, out)


def spool_records(body: bytes, folder: Path) -> list[Upload]:
    """``{"records": [...]}``, each record written as ``folder/<i>/record.json`` (422 for a bad shape)."""
    try:
        records = RecordsUpload.model_validate_json(body).records
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc
    uploads = []
    for i, record in enumerate(records):
        (folder / str(i)).mkdir()
        (folder / str(i) / "record.json").write_text(json.dumps(record.model_dump(exclude_none=True)), "utf-8")
        uploads.append(Upload(f"records[{i}]", folder / str(i)))
    return uploads


def load_uploads(uploads: list[Upload], limits: Limits) -> list[Loaded]:
    """Each upload's documents and skip reasons; a doc_id already taken by an earlier upload is skipped."""
    taken: dict[str, str] = {}
    loaded = []
    for upload in uploads:
        item = Loaded(upload, [], [])
        for doc in iter_documents([upload.root], limits):
            if isinstance(doc, Skipped):
                item.skipped.append(doc.reason.replace(f"{upload.root}/", ""))
            elif doc.doc_id in taken:
                item.skipped.append(f"duplicate doc_id {doc.doc_id!r} (also in {taken[doc.doc_id]})")
            else:
                taken[doc.doc_id] = upload.name
                item.documents.append(doc)
        loaded.append(item)
    return loaded


def refuse_cross_site(request: Request, allowed_origins: list[str]) -> None:
    """403 for a browser's upload from another site. A multipart POST is a CORS "simple" request, sent
    without a preflight, so without this any page a user opens could add articles to a local server
    that has no API keys. Browsers always send ``Origin`` on such a POST; curl and scripts send none."""
    origin = request.headers.get("origin")
    if origin is None or origin in allowed_origins:
        return
    if origin.split("://", 1)[-1].lower() != request.headers.get("host", "").lower():
        raise HTTPException(403, "uploads from another site's page are refused (allow its origin with "
                                 "RAG_CORS_ORIGINS)")


def _add(state: ServiceState, documents: list[Document]) -> IngestReport:
    embedder, chunker = state.ingester()
    settings = state.settings
    return add_documents(documents, settings.index_dir, embedder, chunker, batch_size=settings.embedding_batch_size,
                         sentence_embedder=state.embedder if settings.sentence_vectors else None,
                         vector_policy=VectorPolicy.from_settings(settings))


def _remove(state: ServiceState, doc_id: str) -> IngestReport:
    embedder, chunker = state.ingester()
    settings = state.settings
    return remove_documents([doc_id], settings.index_dir, embedder, chunker,
                            sentence_embedder=state.embedder if settings.sentence_vectors else None,
                            vector_policy=VectorPolicy.from_settings(settings))


async def _write(state: ServiceState, work: Callable[..., IngestReport], *args: object) -> IngestReport:
    """Run one index write in a worker thread, then serve its generation; one write at a time."""
    async with state.writes:
        try:
            report = await asyncio.to_thread(work, state, *args)
        except IndexLocked as exc:
            raise HTTPException(503, "another ingest is writing the index: retry when it has finished",
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
        except CannotUpdate as exc:
            raise HTTPException(409, without_paths(str(exc))) from exc
        if report.published:
            await asyncio.to_thread(state.refresh)
    return report


def upload_report(loaded: list[Loaded], report: IngestReport, serving: str) -> dict:
    status = {**{d: "added" for d in report.added}, **{d: "updated" for d in report.updated}}
    files = []
    for item in loaded:
        documents = [{"doc_id": d.doc_id, "status": status.get(d.doc_id, "unchanged")} for d in item.documents]
        state = "skipped" if not documents else "partly skipped" if item.skipped else "ingested"
        files.append({"name": item.upload.name, "status": state, "documents": documents, "skipped": item.skipped})
    return {"files": files, "added": report.added, "updated": report.updated, "unchanged": report.unchanged,
            "skipped": sum(len(item.skipped) for item in loaded), "warnings": report.warnings,
            "chunks_embedded": report.chunks_embedded, "documents_total": report.documents_total,
            "chunks_total": report.chunks_total, "published": report.published, "generation": serving,
            "seconds": round(report.seconds, 3)}


@router.post("/api/documents", response_model=UploadReport, tags=["documents"], openapi_extra=_BODY_DOC)
async def upload(request: Request, state: ServiceState = Depends(service)) -> dict:
    """Add articles to the live index: multipart ``files`` (.md .txt .html .json .jsonl) or JSON
    ``{"records": [...]}``. Answers once the server serves them, with a report per file or record."""
    refuse_cross_site(request, state.settings.cors_origins)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    with tempfile.TemporaryDirectory(prefix="rag-upload-") as tmp:
        if kind == "multipart/form-data":
            uploads = await spool_files(request, Path(tmp))
        elif kind == "application/json":
            uploads = await asyncio.to_thread(spool_records, await request.body(), Path(tmp))
        else:
            raise HTTPException(415, "send multipart/form-data with the field 'files', or application/json "
                                     "{\"records\": [...]}")
        loaded = await asyncio.to_thread(load_uploads, uploads, Limits.from_settings(state.settings))
    documents = [doc for item in loaded for doc in item.documents]
    report = await _write(state, _add, documents) if documents else IngestReport()
    if not report.published and state.pipeline is not None:
        report.documents_total, report.chunks_total = state.pipeline.index.counts()
    serving = state.pipeline.index.generation.name if state.pipeline else ""
    return upload_report(loaded, report, serving)


@router.delete("/api/documents/{doc_id:path}", status_code=204, tags=["documents"],
               responses={404: {"description": "No such document."}})
async def delete(doc_id: str, state: ServiceState = Depends(service)) -> Response:
    """Remove an article from the live index (a new generation, published atomically)."""
    try:
        report = await _write(state, _remove, doc_id)
    except IndexNotFound as exc:
        raise HTTPException(404, f"no document {doc_id!r}") from exc
    if not report.removed:
        raise HTTPException(404, f"no document {doc_id!r}")
    return Response(status_code=204)
