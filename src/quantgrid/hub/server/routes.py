"""The hub's ``/v1`` endpoints (releases live in their own router).

| method | path                          | auth    | what                                            |
|--------|-------------------------------|---------|-------------------------------------------------|
| GET    | /v1/health                    | -       | version, recipe hash, upload limits, queue      |
| GET    | /v1/recipe                    | -       | the hub's recipe (JSON) and its hash            |
| GET    | /v1/me                        | token   | who the token belongs to                        |
| POST   | /v1/submissions               | token   | upload a submission zip (raw body, streamed)    |
| GET    | /v1/submissions               | token   | your submissions (admins: ``?all=true``)        |
| GET    | /v1/submissions/{id}          | token   | status + full report (owner/admin, else 404)    |
| GET    | /v1/adapters                  | -       | accepted adapters: owner, score, impact, votes  |
| POST   | /v1/adapters/{id}/upvote      | token   | upvote someone else's adapter, once             |
| GET    | /v1/leaderboard               | -       | ranked contributors + the ranking formula       |

Upload headers: ``X-Content-SHA256`` (required), ``Idempotency-Key`` (optional, ≤128
chars), ``X-Filename`` (optional), ``Content-Length`` (required, so too-large bodies are
refused with 413 before any byte is read; a body that outgrows it is cut off with 413 too).
The order of the checks, the caps and the read timeout are in ``uploads.py``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from quantgrid import __version__
from quantgrid.hub import schemas as S
from quantgrid.hub.server import leaderboard as lb
from quantgrid.hub.server import submissions as subs
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.deps import CurrentUser, OptionalUser, get_blobs, get_db, get_settings
from quantgrid.hub.server.jobs import queue_counts
from quantgrid.hub.server.storage import BlobStore
from quantgrid.hub.server.uploads import receive_submission
from quantgrid.hub.settings import HubSettings

router = APIRouter(prefix="/v1")

Settings = Annotated[HubSettings, Depends(get_settings)]
DB = Annotated[Database, Depends(get_db)]
Blobs = Annotated[BlobStore, Depends(get_blobs)]
_AUTH = {401: {"model": S.ErrorBody, "description": "missing, invalid or revoked token"},
         429: {"model": S.ErrorBody, "description": "rate limited (see Retry-After)"}}


@router.get("/health", response_model=S.Health, tags=["hub"])
def health(settings: Settings, db: DB, _user: OptionalUser) -> S.Health:
    """Liveness, version, the recipe hash and the limits a client should respect."""
    return S.Health(version=__version__, recipe_hash=settings.recipe.hash(), max_upload_bytes=settings.max_upload_bytes,
                    daily_submission_limit=settings.daily_submission_limit, queue=queue_counts(db))


@router.get("/recipe", response_model=S.RecipeOut, tags=["hub"])
def recipe(settings: Settings, _user: OptionalUser) -> S.RecipeOut:
    """The recipe every submission must follow (`quantgrid train --hub URL` uses it)."""
    return S.RecipeOut(recipe=settings.recipe.model_dump(mode="json"), hash=settings.recipe.hash())


@router.get("/me", response_model=S.WhoAmI, responses=_AUTH, tags=["users"])
def me(user: CurrentUser) -> S.WhoAmI:
    return S.WhoAmI(name=user.name, is_admin=user.is_admin)


_ZIP_BODY = {"requestBody": {"required": True, "description": "the submission zip, streamed as the raw body",
                             "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}},
                                         "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post(
    "/submissions", response_model=S.SubmissionOut, status_code=201, tags=["submissions"], openapi_extra=_ZIP_BODY,
    responses={**_AUTH, 200: {"model": S.SubmissionOut, "description": "this push repeats an existing submission"},
               408: {"model": S.ErrorBody, "description": "the body stalled past upload_read_timeout_seconds"},
               413: {"model": S.ErrorBody, "description": "larger than max_upload_bytes"},
               422: {"model": S.ErrorBody, "description": "bad sha256, or idempotency key reused for other bytes"},
               503: {"model": S.ErrorBody, "description": "too many uploads in progress, or storage unavailable"},
               507: {"model": S.ErrorBody, "description": "the hub's storage is full"}},
)
async def push(
    request: Request, response: Response, user: CurrentUser, settings: Settings, db: DB, blobs: Blobs,
    sha256: Annotated[str, Header(alias=S.SHA256_HEADER, pattern=r"^[0-9a-fA-F]{64}$",
                                  description="sha256 of the body, hex")],
    idempotency_key: Annotated[str | None, Header(alias=S.IDEMPOTENCY_HEADER, min_length=1, max_length=128)] = None,
    filename: Annotated[str | None, Header(alias=S.FILENAME_HEADER, max_length=255)] = None,
) -> S.SubmissionOut:
    """Upload a submission zip. The hub stores it and queues validation; poll its status."""
    sub, created = await receive_submission(request, user, settings, db, blobs, sha256=sha256.lower(),
                                            key=idempotency_key, filename=filename)
    if not created:
        response.status_code = 200
    return subs.to_out(sub, user.name, show_report=True, duplicate=not created)


@router.get("/submissions", response_model=S.SubmissionList, responses=_AUTH, tags=["submissions"])
def list_submissions(
    user: CurrentUser, db: DB,
    all: Annotated[bool, Query(description="admins: every user's submissions")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> S.SubmissionList:
    return S.SubmissionList(items=subs.list_for(db, user, all_users=all, limit=limit))


@router.get("/submissions/{submission_id}", response_model=S.SubmissionOut, tags=["submissions"],
            responses={**_AUTH, 404: {"model": S.ErrorBody, "description": "no such submission, or not yours"}})
def get_submission(user: CurrentUser, db: DB,
                   submission_id: Annotated[int, Path(ge=1, le=2**62)]) -> S.SubmissionOut:
    """Status and full validation report. Only the owner and admins can see a submission."""
    return subs.get_for(db, user, submission_id)


@router.get("/adapters", response_model=S.AdapterList, tags=["leaderboard"])
def adapters(db: DB, _user: OptionalUser, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> S.AdapterList:
    """Accepted adapters with their public (rounded) score, impact and upvotes."""
    return S.AdapterList(items=lb.list_adapters(db, limit))


@router.post("/adapters/{adapter_id}/upvote", response_model=S.VoteOut, tags=["leaderboard"],
             responses={**_AUTH, 403: {"model": S.ErrorBody, "description": "your own adapter"},
                        404: {"model": S.ErrorBody, "description": "no accepted adapter with this id"},
                        409: {"model": S.ErrorBody, "description": "already upvoted"}})
def upvote(user: CurrentUser, db: DB, adapter_id: Annotated[int, Path(ge=1, le=2**62)]) -> S.VoteOut:
    return lb.upvote(db, user, adapter_id)


@router.get("/leaderboard", response_model=S.Leaderboard, tags=["leaderboard"])
def leaderboard(settings: Settings, db: DB, _user: OptionalUser,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> S.Leaderboard:
    """Contributors ranked by accepted adapters, then impact, then upvotes (see `formula`)."""
    return lb.leaderboard(db, settings, limit)
