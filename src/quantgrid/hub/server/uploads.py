"""Reading a submission upload: every check that can be made from the headers comes first,
then the body is streamed into the blob store under a read timeout and three caps.

Order, for ``POST /v1/submissions`` (the caller is already authenticated: ``deps.current_user``):

1. a repeat (same bytes or same ``Idempotency-Key``) answers 200 with the existing submission;
2. ``Content-Length`` must be present, non-zero and at most ``max_upload_bytes`` (413);
3. this process reads at most ``max_concurrent_uploads`` bodies at once (503 + Retry-After);
4. an upload slot for the user (``ratelimit``): at most ``max_concurrent_uploads_per_user``
   at once and the daily limit, counted across every hub process (429 + Retry-After);
5. the body, each read bounded by ``upload_read_timeout_seconds`` (408), hashed as it comes
   and checked against ``X-Content-SHA256`` (422); only then is the blob placed in the store;
6. the submission, its validate job and the slot's release commit in one transaction.

A refusal at steps 1-4 reads no body; a failure at step 5 removes the temp file, so refused
and rate-limited uploads never leave a blob.
"""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from quantgrid.errors import HubError, PayloadTooLarge, RetryLater, Unprocessable
from quantgrid.hub.server import ratelimit
from quantgrid.hub.server import submissions as subs
from quantgrid.hub.server.auth import Principal
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.deps import drain_body, read_chunks
from quantgrid.hub.server.models import Submission
from quantgrid.hub.server.storage import BlobStore
from quantgrid.hub.settings import HubSettings


class UploadTimeout(HubError, code="request_timeout", http_status=408):
    """The client sent the upload too slowly."""


class HubBusy(HubError, RetryLater, code="busy", http_status=503):
    """Too many uploads in progress on this hub process."""


def content_length(request: Request, settings: HubSettings) -> int:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise Unprocessable("Content-Length header is required", hint="send the file with its size (the CLI does)")
    n = int(length)
    if n > settings.max_upload_bytes:
        raise PayloadTooLarge(f"upload of {n} bytes is larger than the hub's limit of {settings.max_upload_bytes} bytes",
                              hint="a submission zip holds only the LoRA adapter; remove other files and package again")
    if n == 0:
        raise Unprocessable("empty upload", hint="push a zip made by `quantgrid package`")
    return n


async def receive_submission(request: Request, user: Principal, settings: HubSettings, db: Database,
                             blobs: BlobStore, *, sha256: str, key: str | None,
                             filename: str | None) -> tuple[Submission, bool]:
    """Steps 1-6 of the module docstring. Returns ``(submission, created)``."""
    existing = await run_in_threadpool(subs.find_existing, db, user, sha256, key)
    if existing is not None:
        await drain_body(request)  # a repeat: the bytes are already here
        sub, _ = await run_in_threadpool(subs.create, db, user, settings, sha256=sha256,
                                         size=existing.size_bytes, filename=existing.filename, key=key)
        return sub, False
    length = content_length(request, settings)
    state = request.app.state
    if state.uploads_in_flight >= settings.max_concurrent_uploads:
        raise HubBusy(f"the hub is reading {state.uploads_in_flight} uploads already", retry_after=5,
                      hint="push again in a few seconds (the CLI retries by itself)")
    state.uploads_in_flight += 1
    slot = None
    try:
        slot = await run_in_threadpool(subs.acquire_upload_slot, db, user, settings)
        with blobs.writer(max_bytes=min(length, settings.max_upload_bytes)) as w:
            async for chunk in read_chunks(request, settings.upload_read_timeout_seconds):
                w.write(chunk)  # raises 413 as soon as the body outgrows Content-Length or the limit
            if w.size != length:
                raise Unprocessable(f"body ended after {w.size} of {length} bytes", hint="push again")
            await run_in_threadpool(w.commit, sha256)
            size = w.size
        name = (filename or f"submission-{sha256[:12]}.zip").replace("/", "_").replace("\\", "_")
        sub, created = await run_in_threadpool(subs.create, db, user, settings, sha256=sha256, size=size,
                                               filename=name, key=key, slot_id=slot)
        slot = None  # released in create's transaction
        return sub, created
    finally:
        state.uploads_in_flight -= 1
        if slot is not None:
            await run_in_threadpool(ratelimit.free_slot, db, slot)
