"""Uploads of archive files (admin): declare a file, send it in checksummed chunks, complete.

    POST   /uploads                       declare {prefix, path, size, sha256}: 201 new session,
                                          200 with what the server has (resume), or
                                          exists/duplicate (nothing to send)
    PUT    /uploads/{id}/chunks?offset=N  raw bytes with Content-Digest: sha-256=:<base64>:
    POST   /uploads/{id}/complete         verify size and SHA-256, store atomically
    GET    /uploads/{id}, GET /uploads    progress (bytes received), unfinished uploads
    DELETE /uploads/{id}                  abort: drop the parts (those that exist, in batches, on a
                                          pool of their own; the answer waits for them at most
                                          ORACULUM_API_UPLOAD_ABORT_SECONDS)

The files land in ``archive/<prefix>/<path>``, where ``oraculum preprocess`` reads them (the
answer's ``source``). Sessions and parts live in the store (see :mod:`oraculum.api.uploads`), so
an interrupted upload continues after a client or an API restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response

from ..bodies import SafeRoute
from ..deps import Admin, State, get_state
from ..models import UploadIn, UploadList, UploadOut
from ..ratelimit import LIMITED, limit
from ..state import AppState
from ..uploads import ID_PATTERN, MAX_FILE_BYTES, Outcome, UploadError, Uploads, check_prefix

log = logging.getLogger("oraculum.api")

router = APIRouter(prefix="/uploads", tags=["uploads"], route_class=SafeRoute, dependencies=[limit("uploads", "admin")],
                   responses=LIMITED)

UploadId = Annotated[str, Path(pattern=ID_PATTERN, description="The upload's id (from POST /uploads).")]
_RESUME = {409: {"description": "not where the server is: `detail.received` is the offset to continue from"}}


def uploads_of(app: Any, state: AppState) -> Uploads:
    """One :class:`Uploads` per application state (its locks serialise calls of one session)."""
    service: Uploads | None = getattr(app.state, "uploads", None)
    if service is None or service.store is not state.store:
        settings = state.settings
        service = Uploads(state.store, settings.api_max_body_bytes, settings.cache_dir,
                          max_bytes=settings.api_upload_max_bytes, max_chunks=settings.api_upload_max_chunks)
        app.state.uploads = service
    return service


async def get_uploads(request: Request) -> Uploads:
    """:func:`uploads_of` as a dependency; ``async`` only so that FastAPI calls it on the event
    loop, not on a worker thread."""
    return uploads_of(request.app, get_state(request))


Service = Annotated[Uploads, Depends(get_uploads)]


async def _call(state: State, fn: Any, *args: Any) -> Any:
    """Run a blocking upload operation on the uploads' own thread pool (a flood of uploads
    never takes the threads of other requests); its refusals become 4xx answers."""
    try:
        return await state.io(fn, *args, pool="uploads")
    except UploadError as error:
        detail: Any = {"message": error.message, **error.extra} if error.extra else error.message
        raise HTTPException(error.status, detail) from None


def _out(service: Uploads, outcome: Outcome) -> UploadOut:
    session = outcome.session
    received = session.size if outcome.status in ("complete", "exists", "duplicate") else session.received
    return UploadOut(
        id=session.id, status=outcome.status, prefix=session.prefix, path=session.path, key=session.key,  # type: ignore[arg-type]
        size=session.size, sha256=session.sha256, received=received,
        fraction=received / session.size if session.size else 1.0, duplicate_of=outcome.duplicate_of,
        chunk_size=session.chunk, source=service.source(session.prefix), who=session.who,
        created=session.created, updated=session.updated,
    )


def chunk_digest(header: str) -> str:
    """The hex SHA-256 in a ``Content-Digest`` header (RFC 9530: ``sha-256=:<base64>:``)."""
    usage = "send Content-Digest: sha-256=:<base64 of the chunk's SHA-256>: (RFC 9530)"
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() != "sha-256":
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == ":":
            try:
                raw = base64.b64decode(value[1:-1], validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) == 32:
                return raw.hex()
        raise HTTPException(422, f"Content-Digest {header[:120]!r} has no valid sha-256 value: {usage}")
    raise HTTPException(422, f"Content-Digest {header[:120]!r} has no sha-256: {usage}")


@router.post("", response_model=UploadOut, status_code=201,
             responses={200: {"model": UploadOut, "description": "known already: resume, or nothing to send"},
                        409: {"description": "the path holds different content"}},
             summary="Declare a file to upload (path, size, sha256): what does the server have of it?")
async def begin(state: State, principal: Admin, service: Service, body: UploadIn, response: Response) -> UploadOut:
    outcome: Outcome = await _call(state, service.begin, body.prefix, body.path, body.size, body.sha256, principal.name,
                                   body.chunk_size)
    if not outcome.created:
        response.status_code = 200
    return _out(service, outcome)


@router.get("", response_model=UploadList, summary="Unfinished uploads, most recently active first")
async def in_progress(state: State, _: Admin, service: Service,
                      prefix: Annotated[str | None, Query(max_length=256, description="Only this archive prefix.")] = None,
                      offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> UploadList:
    if prefix is not None:
        try:
            prefix = check_prefix(prefix)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
    sessions = await _call(state, service.in_progress, prefix)
    return UploadList(total=len(sessions), uploads=[_out(service, Outcome(s, "uploading"))
                                                    for s in sessions[offset:offset + limit]])


@router.get("/{upload_id}", response_model=UploadOut, summary="An upload's progress (bytes received)")
async def get(state: State, _: Admin, service: Service, upload_id: UploadId) -> UploadOut:
    return _out(service, await _call(state, service.get, upload_id))


@router.put(
    "/{upload_id}/chunks", response_model=UploadOut, responses=_RESUME,
    summary="Send the bytes from `offset` on (raw body, checked against its Content-Digest)",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def put_chunk(state: State, _: Admin, service: Service, upload_id: UploadId, request: Request,
                    offset: Annotated[int, Query(ge=0, le=MAX_FILE_BYTES, description="Byte offset of the chunk in the file.")],
                    content_digest: Annotated[str, Header(alias="Content-Digest", max_length=1000,
                                                          description="sha-256=:<base64 SHA-256 of the body>: (RFC 9530)")],
                    ) -> UploadOut:
    digest = chunk_digest(content_digest)
    data = await request.body()
    return _out(service, await _call(state, service.put_chunk, upload_id, offset, data, digest))


@router.post("/{upload_id}/complete", response_model=UploadOut, responses={
    **_RESUME, 422: {"description": "size or SHA-256 of the whole file do not match: nothing stored"}},
    summary="Verify the whole file (size, SHA-256) and store it atomically")
async def complete(state: State, _: Admin, service: Service, upload_id: UploadId) -> UploadOut:
    return _out(service, await _call(state, service.complete, upload_id))


@router.delete("/{upload_id}", status_code=204, response_class=Response, summary="Abort an upload: drop its parts",
               description="The upload is forgotten at once; its parts are deleted on a pool of their own, and "
                           "the answer waits for that at most ORACULUM_API_UPLOAD_ABORT_SECONDS (the rest goes on "
                           "in the background).",
               responses={409: {"description": "the upload is complete: delete the file, not the upload"}})
async def abort(state: State, _: Admin, service: Service, upload_id: UploadId) -> Response:
    cleanup = await _call(state, service.abort, upload_id)
    await in_background(state, cleanup, f"deleting the parts of upload {upload_id}",
                        state.settings.api_upload_abort_seconds)
    return Response(status_code=204)


async def in_background(state: AppState, work: Callable[[], Any], what: str, wait: float) -> None:
    """Run ``work`` on the cleanup pool, waiting at most ``wait`` seconds for it; it goes on if
    it takes longer (or the client leaves), and a failure is logged (the hourly expiry retries)."""
    future = asyncio.get_running_loop().run_in_executor(state.pools["cleanup"], work)

    def report(done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning("%s failed (the expiry of uploads will try again): %s", what, done.exception())

    future.add_done_callback(report)
    with contextlib.suppress(Exception):  # a timeout, or a failure ``report`` logs: the answer stands
        await asyncio.wait_for(asyncio.shield(future), wait)


async def expire_uploads(app: Any, state: AppState, every: float = 3600.0) -> None:
    """Discard idle uploads (ORACULUM_API_UPLOAD_EXPIRE_SECONDS) every ``every`` seconds, for the
    life of the app (a task of its lifespan)."""
    while True:
        await asyncio.sleep(every)
        try:
            done = await state.io(uploads_of(app, state).expire, state.settings.api_upload_expire_seconds,
                                  pool="cleanup")
            if any(done.values()):
                log.info("uploads: %s", ", ".join(f"{n} {what}" for what, n in done.items()))
        except Exception as error:  # noqa: BLE001 - the next round tries again
            log.warning("expiring uploads failed: %s", error)
