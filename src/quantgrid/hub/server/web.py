"""The hub's web pages: server-rendered HTML (Jinja2), readable without JavaScript.

| path                     | who        | what                                                        |
|--------------------------|------------|-------------------------------------------------------------|
| GET  /                   | anyone     | the leaderboard (sortable) and the accepted adapters         |
| GET  /contributors/NAME  | anyone     | one contributor's accepted adapters and counts               |
| GET  /submissions/ID     | owner      | a submission's status and validation report                  |
| GET  /releases           | anyone     | releases: hidden-benchmark loss by release, notes, downloads |
| GET  /recipe             | anyone     | the hub's recipe and how to contribute                       |
| GET/POST /login, /logout | anyone     | sign in with an API token (kept in an HttpOnly cookie)       |
| POST /adapters/ID/upvote | signed in  | upvote from the page (CSRF-protected form)                   |
| GET  /human-eval         | maintainer | candidates with answer pairs to grade (see human_eval.py)    |
| GET  /human-eval/KIND/T  | maintainer | the next pair to grade: question, answers A and B, the rubric |
| POST /human-eval/items/ID/grade | maintainer | grades of one pair (CSRF-protected form)           |

Maintainers are the hub's admins. The grading page is blind: it shows "Answer A" and
"Answer B" only; which one is the base is kept server-side and applied when the grades
are stored. Aggregates (never single grades) appear on the leaderboard and release pages.

Public pages show what the JSON API shows anonymously: rounded scores, never a hidden item.
Every page is sent with a Content-Security-Policy that allows no script at all, and user
text (names, file names, report messages) reaches the page only through Jinja2's escaping.

CSRF: every form carries a token the attacker's page cannot know. Signed in, it is an HMAC of
the session token (itself HttpOnly and SameSite=Strict); on the login form, a random value
that is also set as a cookie (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from quantgrid import __version__
from quantgrid.errors import AuthError, QuantGridError
from quantgrid.hub.server import human_eval as he
from quantgrid.hub.server import leaderboard as lb
from quantgrid.hub.server import submissions as subs
from quantgrid.hub.server.auth import Principal
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.deps import authenticate_charged, get_db, get_settings, optional_user
from quantgrid.hub.settings import HubSettings

SESSION_COOKIE = "qg_session"
LOGIN_CSRF_COOKIE = "qg_login_csrf"
SORT_KEYS = {"rank": "rank", "accepted": "accepted", "impact": "impact", "upvotes": "upvotes", "name": "contributor"}
# Messages a redirect may show are chosen by code, so a link cannot put words on the page.
NOTICES = {"voted": "Upvote recorded.", "own": "You cannot upvote your own adapter.",
           "again": "You already upvoted that adapter.", "gone": "No accepted adapter with that id.",
           "csrf": "The form expired; please try again.", "signin": "Sign in to upvote.",
           "badtoken": "That token is not valid (or was revoked).", "out": "Signed out.",
           "graded": "Grades recorded.", "badgrade": "Give every score from 1 to 5 and the risk flag yes or no.",
           "noitem": "No such answer pair.", "owngrade": "You cannot grade your own adapter."}
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
router = APIRouter(include_in_schema=False)
DB = Annotated[Database, Depends(get_db)]
Settings = Annotated[HubSettings, Depends(get_settings)]


def csrf_for(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"quantgrid-web-csrf", hashlib.sha256).hexdigest()


async def web_user(request: Request) -> Principal | None:
    """The signed-in user from the session cookie (None if absent or no longer valid); rate-limited like the API."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return await optional_user(request)  # no bearer header on a page: charged as anonymous
    try:
        return await authenticate_charged(request, token)
    except AuthError:
        return None


WebUser = Annotated[Principal | None, Depends(web_user)]


def _page(request: Request, name: str, user: Principal | None, status: int = 200, **context) -> HTMLResponse:
    token = request.cookies.get(SESSION_COOKIE)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    response = templates.TemplateResponse(
        request, name, {"user": user, "csrf": csrf_for(token) if user and token else "", "notice": notice,
                        "version": __version__, "dp": request.app.state.settings.score_decimals, **context},
        status_code=status)
    _secure(response)
    return response


def _secure(response: Response) -> None:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"


def _redirect(path: str, notice: str | None = None) -> RedirectResponse:
    response = RedirectResponse(path + (f"?notice={notice}" if notice else ""), status_code=303)
    _secure(response)
    return response


@router.get("/", response_class=HTMLResponse)
def leaderboard_page(request: Request, db: DB, settings: Settings, user: WebUser, sort: str = "rank") -> HTMLResponse:
    board = lb.leaderboard(db, settings, limit=1000)
    entries = board.entries
    key = SORT_KEYS.get(sort, "rank")
    if key == "contributor":
        entries = sorted(entries, key=lambda e: e.contributor.lower())
    elif key != "rank":
        entries = sorted(entries, key=lambda e: (-getattr(e, key), e.rank))
    return _page(request, "leaderboard.html", user, entries=entries, formula=board.formula, sort=key,
                 adapters=lb.list_adapters(db, limit=200), **_adapter_columns(request, db))


def _adapter_columns(request: Request, db: Database) -> dict:
    """What the adapters table shows beside the API's fields: each adapter's registry name and
    version, and its human-evaluation aggregate (adapter id -> summary)."""
    from quantgrid.hub.server.registry import build_registry

    versions = {e.id: (e.name, e.version) for e in build_registry(db, request.app.state.blobs).adapters}
    human = {int(t): v for t, v in he.summaries(db, "adapter").items() if t.isdigit()}
    return {"versions": versions, "human": human}


@router.get("/contributors/{name}", response_class=HTMLResponse)
def contributor_page(request: Request, name: str, db: DB, settings: Settings, user: WebUser) -> HTMLResponse:
    entry = next((e for e in lb.leaderboard(db, settings, limit=100_000).entries if e.contributor == name), None)
    if entry is None:
        return _page(request, "missing.html", user, status=404, what=f"contributor {name}")
    adapters = lb.list_adapters(db, limit=1000, owner=name)
    return _page(request, "contributor.html", user, entry=entry, adapters=adapters, **_adapter_columns(request, db))


@router.get("/submissions/{submission_id}", response_class=HTMLResponse)
def submission_page(request: Request, submission_id: int, db: DB, user: WebUser) -> HTMLResponse:
    if user is None:
        return _redirect("/login", "signin")
    try:
        sub = subs.get_for(db, user, submission_id)  # owner or admin, else the same 404 as a missing id
    except QuantGridError:
        return _page(request, "missing.html", user, status=404, what=f"submission {submission_id}")
    return _page(request, "submission.html", user, sub=sub, report=sub.report or {})


@router.get("/releases", response_class=HTMLResponse)
def releases_page(request: Request, db: DB, settings: Settings, user: WebUser) -> HTMLResponse:
    from quantgrid.hub.server.releases import list_releases

    listing = list_releases(db, None)
    points = []
    for r in reversed(listing.items):  # oldest first on the plot
        loss = ((r.metrics or {}).get("benchmark") or {}).get("new")
        if isinstance(loss, int | float):
            points.append((r.version, settings.round_score(loss)))
    return _page(request, "releases.html", user, releases=listing.items, current=listing.current,
                 plot=_plot(points), points=points, labels=he.LABELS)


def _plot(points: list[tuple[str, float]], width: int = 560, height: int = 180, pad: int = 36) -> dict | None:
    """Coordinates for an inline SVG line of loss by release (no script, no image library)."""
    if not points:
        return None
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = (width - 2 * pad) / max(1, len(points) - 1)
    coords = [(pad + i * step, pad + (hi - v) / span * (height - 2 * pad)) for i, (_, v) in enumerate(points)]
    return {"width": width, "height": height, "pad": pad, "lo": lo, "hi": hi,
            "polyline": " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
            "dots": [(x, y, label, v) for (x, y), (label, v) in zip(coords, points, strict=True)]}


@router.get("/recipe", response_class=HTMLResponse)
def recipe_page(request: Request, settings: Settings, user: WebUser) -> HTMLResponse:
    recipe = settings.recipe
    return _page(request, "recipe.html", user, recipe=recipe.model_dump(mode="json"), recipe_hash=recipe.hash(),
                 hub_url=str(request.base_url).rstrip("/"))


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, user: WebUser) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = _page(request, "login.html", user, login_csrf=nonce)
    response.set_cookie(LOGIN_CSRF_COOKIE, nonce, httponly=True, samesite="strict", path="/login",
                        secure=request.url.scheme == "https", max_age=3600)
    return response


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form(max_length=200)],
                csrf: Annotated[str, Form(max_length=200)]) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf):
        return _redirect("/login", "csrf")
    try:
        await authenticate_charged(request, token.strip())  # a wrong token counts against the IP
    except AuthError:
        return _redirect("/login", "badtoken")
    response = _redirect("/")
    response.set_cookie(SESSION_COOKIE, token.strip(), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https", max_age=30 * 24 * 3600)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, user: WebUser, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    if user is not None and not _csrf_ok(request, csrf):
        return _redirect("/", "csrf")
    response = _redirect("/", "out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _csrf_ok(request: Request, csrf: str) -> bool:
    token = request.cookies.get(SESSION_COOKIE, "")
    return bool(token) and hmac.compare_digest(csrf_for(token), csrf)


@router.post("/adapters/{adapter_id}/upvote")
def upvote(request: Request, adapter_id: int, db: DB, user: WebUser,
           csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    if user is None:
        return _redirect("/login", "signin")
    if not _csrf_ok(request, csrf):
        return _redirect("/", "csrf")
    from quantgrid.errors import Conflict, NotFound, PermissionDenied

    try:
        lb.upvote(db, user, adapter_id)
    except PermissionDenied:
        return _redirect("/", "own")
    except Conflict:
        return _redirect("/", "again")
    except NotFound:
        return _redirect("/", "gone")
    return _redirect("/", "voted")


# ------------------------------------------------------------------ human evaluation (maintainers)


def _maintainer_only(request: Request, user: Principal | None) -> Response | None:
    """None for a maintainer; otherwise the answer: sign in first, or 403 for anyone else."""
    if user is None:
        return _redirect("/login", "signin")
    if not user.is_admin:
        return _page(request, "forbidden.html", user, status=403,
                     what="Grading answers is for the hub's maintainers (admin tokens).")
    return None


@router.get("/human-eval", response_class=HTMLResponse)
def human_eval_sets(request: Request, db: DB, user: WebUser) -> Response:
    if (refused := _maintainer_only(request, user)) is not None:
        return refused
    return _page(request, "human_eval_sets.html", user, sets=he.sets_for(db, user))


@router.get("/human-eval/{kind}/{target}", response_class=HTMLResponse)
def human_eval_next(request: Request, kind: str, target: str, db: DB, user: WebUser) -> Response:
    if (refused := _maintainer_only(request, user)) is not None:
        return refused
    if kind not in he.KINDS:
        return _page(request, "missing.html", user, status=404, what=f"candidate kind {kind}")
    if he.own_candidate(db, user, kind, target):
        return _page(request, "forbidden.html", user, status=403,
                     what="This is your own adapter: another maintainer grades it, so the grades stay blind.")
    item, done, total = he.next_item(db, user, kind, target)
    return _page(request, "human_eval_item.html", user, kind=kind, target=target, done=done, total=total,
                 item=he.blind_view(item) if item else None, scored=he.SCORED, labels=he.LABELS)


@router.post("/human-eval/items/{item_id}/grade")
async def human_eval_grade(request: Request, item_id: int, db: DB, user: WebUser) -> Response:
    if (refused := _maintainer_only(request, user)) is not None:
        return refused
    form = await request.form()
    if not _csrf_ok(request, str(form.get("csrf", ""))):
        return _redirect("/human-eval", "csrf")
    from pydantic import ValidationError

    from quantgrid.errors import NotFound, PermissionDenied

    def grade(side: str) -> he.Grade:
        flag = form.get(f"{side}_{he.FLAG}")
        if flag not in ("yes", "no"):
            raise ValueError("risk flag")
        return he.Grade(**{k: form.get(f"{side}_{k}") for k in he.SCORED}, risk_flag=flag == "yes")

    try:
        a, b = grade("a"), grade("b")
    except (ValidationError, ValueError):
        with db.read() as s:
            row = s.get(he.HumanEvalItem, item_id)
            back = f"/human-eval/{row.target_kind}/{row.target}" if row else "/human-eval"
        return _redirect(back, "badgrade")
    try:
        item = await run_in_threadpool(he.record_grade, db, user, item_id, a, b)
    except NotFound:
        return _redirect("/human-eval", "noitem")
    except PermissionDenied:
        return _redirect("/human-eval", "owngrade")
    return _redirect(f"/human-eval/{item.target_kind}/{item.target}", "graded")
