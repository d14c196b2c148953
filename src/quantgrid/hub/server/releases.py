"""The hub's side of releases: gather accepted adapters, run the release engine, record it.

| method | path                                | auth | what                                          |
|--------|-------------------------------------|------|-----------------------------------------------|
| GET    | /v1/releases                        | -    | every published release, newest first         |
| GET    | /v1/releases/latest                 | -    | the release in service                        |
| GET    | /v1/releases/{version}              | -    | one release: manifest metrics and notes       |
| GET    | /v1/releases/{version}/download     | -    | zip of the PEFT adapter directory + manifest  |

The database is the source of truth for which release is in service (``is_current``);
``<storage>/releases/CURRENT`` mirrors it for file-based consumers. Publishing renames a
complete directory into place, then commits one transaction (new row current, the others
not, adapter impacts), then moves the pointer file: a crash anywhere keeps the previous
release in service.

With object storage (``storage_url: s3://bucket/prefix``) the release is also uploaded as
one archive beside the blobs before that transaction (``storage.ReleaseArchives``: temp key,
then final key named by its sha256), and the row records the object's URL. Downloads stream
it from there, and every host that needs the files (workers, the next release) unpacks a
verified copy: nothing depends on the directory of the host that built the release. An
archive uploaded by a release that crashed before its commit is named by no row: never
served, and removed by ``quantgrid hub gc``.

The scheduler (``release_schedule`` setting: a cron expression in UTC, by default
``"0 3 * * SUN"``, weekly; ``"off"`` turns it off) runs in the hub
process: at startup and every minute it enqueues one ``release`` job per due slot (the
slot is the job's dedupe key, so several hub processes never release twice). A slot that
passed while the hub was down is due at once: the missed release runs at startup. A release
with no new accepted adapter since the one in service is skipped with a message, not
published again under a new version.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import zipfile
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import select, update

from quantgrid import lora_files
from quantgrid.errors import NotFound
from quantgrid.hub import schemas as S
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.deps import OptionalUser, get_blobs, get_db, get_settings
from quantgrid.hub.server.human_eval import queue_release, with_grades
from quantgrid.hub.server.models import Adapter, Job, Release, User, utcnow
from quantgrid.hub.server.storage import BlobStore, ReleaseArchives, open_release_archives
from quantgrid.hub.settings import HubSettings
from quantgrid.merge.schedule import VERSION_PATTERN
from quantgrid.utils import atomic_path

log = logging.getLogger(__name__)


def release_root(settings: HubSettings) -> Path:
    return settings.storage_dir / "releases"


# ------------------------------------------------------------------ inputs


def hidden_sets(settings: HubSettings):
    """(hidden benchmark, out-of-domain set): exactly the items validation judges with."""
    from quantgrid.hub.benchmark import hidden_sets as _hidden

    h = _hidden(settings)
    return h.benchmark, h.ood


def accepted_contributions(db: Database, settings: HubSettings) -> list:
    """Every accepted adapter (releases are cumulative), read from the blob store in memory."""
    from quantgrid.hub.server.storage import open_blob_store
    from quantgrid.hub.validate import factor_cache
    from quantgrid.merge.release import Contribution

    blobs = open_blob_store(settings)
    cache = factor_cache(settings)  # filled when each adapter was accepted
    with db.read() as s:
        rows = s.execute(select(Adapter.id, Adapter.blob_sha256, Adapter.score, User.name)
                         .join(User, User.id == Adapter.user_id).order_by(Adapter.id)).all()
    return [Contribution(id=f"{aid:06d}", contributor=name, score=score, sha256=sha,
                         factors=cache.factors(sha, settings.recipe, lambda sha=sha: blobs.read_bytes(sha)))
            for aid, sha, score, name in rows]


def current_release(db: Database) -> Release | None:
    with db.read() as s:
        return s.scalar(select(Release).where(Release.is_current.is_(True)))


def release_dir(settings: HubSettings, release: Release) -> Path | None:
    """A local directory with ``release``'s files: its own directory, or (object storage) a
    verified copy of its archive. None when its files are gone."""
    if ReleaseArchives.is_ref(release.path):
        archives = open_release_archives(settings)
        if archives is None:
            raise NotFound(f"release {release.version} is in object storage ({release.path}) but the hub's "
                           "storage_url is a local directory", hint="hub admin: set storage_url back")
        return archives.local_dir(release.path)
    # The recorded path, else the same version in this hub's release directory (a storage_dir
    # that moved since the release was published).
    for d in (Path(release.path) if release.path else None, release_root(settings) / release.version):
        if d is not None and (d / lora_files.WEIGHTS).is_file():
            return d
    return None


def current_release_dir(settings: HubSettings, db: Database) -> Path | None:
    """The files of the release in service (what a validation's trial merge uses), or None."""
    cur = current_release(db)
    return release_dir(settings, cur) if cur is not None else None


def published_release_dirs(settings: HubSettings, db: Database) -> list:
    """Every published release as ``PublishedRelease`` (version, local files), oldest first."""
    from quantgrid.hub.validate import PublishedRelease
    from quantgrid.merge.release import version_key

    with db.read() as s:
        rows = list(s.scalars(select(Release).where(Release.status == "published")))
    out = []
    for r in sorted(rows, key=lambda r: version_key(r.version)):
        d = release_dir(settings, r)
        if d is not None:
            out.append(PublishedRelease(r.version, d))
    return out


# ------------------------------------------------------------------ release / rollback


def release_now(settings: HubSettings, db: Database, *, dry_run: bool = False, method: str = "svd",
                rank: int | None = None, weighting: str = "fit", loo: bool = True, options: dict | None = None,
                now: dt.datetime | None = None, log_fn: Callable[[str], None] = log.info, evaluator_sets=None):
    """Build, gate and publish a release of every accepted adapter. Returns a ReleaseOutcome."""
    from quantgrid.merge.release import ReleaseStore

    store = ReleaseStore(release_root(settings))
    with store.lock():
        return _release_locked(settings, db, store, dry_run=dry_run, method=method, rank=rank, weighting=weighting,
                               loo=loo, options=options, now=now, log_fn=log_fn, evaluator_sets=evaluator_sets)


def _release_locked(settings, db, store, *, dry_run, method, rank, weighting, loo, options, now, log_fn,
                    evaluator_sets):
    from quantgrid.merge.release import BuildOptions, ReleaseOutcome, run_release

    contribs = accepted_contributions(db, settings)
    if not contribs:
        return ReleaseOutcome(version="", published=False, dry_run=dry_run,
                              reason="no accepted adapters yet: nothing to release", manifest={})
    with db.read() as s:
        existing = list(s.scalars(select(Release.version)))
    cur = current_release(db)
    previous_dir = release_dir(settings, cur) if cur is not None and cur.path else None
    archives = open_release_archives(settings)
    if cur is not None and not dry_run:
        released = {str(a.get("id")) for a in (cur.manifest or {}).get("adapters", [])}
        if {c.id for c in contribs} <= released:
            msg = (f"no new accepted adapter since release {cur.version}: skipped, nothing published "
                   f"({len(contribs)} adapter(s), all already in {cur.version})")
            log_fn(msg)
            return ReleaseOutcome(version="", published=False, dry_run=False, reason=msg, manifest={})
    benchmark, ood = evaluator_sets if evaluator_sets is not None else hidden_sets(settings)

    def commit(version: str, path: Path, manifest: dict[str, Any]) -> None:
        from quantgrid.merge.release import release_notes

        impact = manifest.get("impact") or {}
        # Object storage: the archive is complete at its final key before the row names it.
        where = archives.put(version, path) if archives is not None else str(path)
        with db.write() as s:
            s.execute(update(Release).values(is_current=False))
            s.add(Release(version=version, status="published", path=where, manifest=manifest,
                          metrics=manifest.get("metrics"), notes=release_notes(manifest), is_current=True,
                          published_at=utcnow()))
            queue_release(s, version, settings.human_eval_sample)
            # The leaderboard sums impact over a contributor's adapters: split each
            # contributor's leave-one-out impact evenly over their adapters.
            per_user: dict[str, list[int]] = {}
            for a in manifest["adapters"]:
                per_user.setdefault(a["contributor"], []).append(int(a["id"]))
            for person, ids in per_user.items():
                if person in impact and impact[person] is not None:
                    s.execute(update(Adapter).where(Adapter.id.in_(ids))
                              .values(impact=impact[person] / len(ids), impact_release=version))

    opts = BuildOptions(method=method, rank=rank, weighting=weighting, options=dict(options or {}))
    return run_release(contribs, store, recipe=settings.recipe, base_path=settings.recipe.base_model,
                       benchmark=benchmark, ood=ood, opts=opts, now=now, existing_versions=existing,
                       previous_dir=previous_dir, dry_run=dry_run, ood_tolerance=settings.ood_tolerance, loo=loo,
                       commit=commit, log=log_fn)


def rollback(settings: HubSettings, db: Database, version: str) -> Release:
    """Put published release ``version`` back in service (one transaction, then the pointer file)."""
    from quantgrid.merge.release import ReleaseStore, version_key

    version_key(version)
    with db.write() as s:
        target = s.scalar(select(Release).where(Release.version == version, Release.status == "published"))
        if target is None:
            known = ", ".join(s.scalars(select(Release.version).where(Release.status == "published"))) or "none"
            raise NotFound(f"release {version} is not a published release of this hub",
                           hint=f"published releases: {known} (`quantgrid releases` lists them)")
        if ReleaseArchives.is_ref(target.path):
            archives = open_release_archives(settings)
            present = archives is not None and archives.exists(target.path)
        else:
            present = bool(target.path) and (Path(target.path) / lora_files.WEIGHTS).is_file()
        if not present:
            raise NotFound(f"release {version}'s files are missing from {target.path}")
        s.execute(update(Release).values(is_current=False))
        target.is_current = True
        s.flush()
        s.expunge(target)
    store = ReleaseStore(release_root(settings))
    if version in store.versions():  # with object storage this host may hold no copy of it
        store.set_current(version)
    return target


def sync_current_file(settings: HubSettings, db: Database) -> None:
    """Make ``releases/CURRENT`` agree with the database (a crash may have left it one step behind)."""
    from quantgrid.merge.release import ReleaseStore

    cur = current_release(db)
    store = ReleaseStore(release_root(settings))
    if cur is not None and store.current() != cur.version and cur.version in store.versions():
        # With object storage this host's directory may be another build's: mirror only one
        # whose files are the row's.
        if ReleaseArchives.is_ref(cur.path) and not _same_files(store.root / cur.version, cur):
            return
        store.set_current(cur.version)


def _same_files(d: Path, release: Release) -> bool:
    import json

    try:
        return json.loads((d / "release.json").read_text()) == json.loads(json.dumps(release.manifest))
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------ job + scheduler


def handle_release_job(ctx) -> dict[str, Any]:
    """Worker handler for ``release`` jobs (payload: method, rank, weighting, dry_run, slot)."""
    p = ctx.payload or {}
    out = release_now(ctx.settings, ctx.db, dry_run=bool(p.get("dry_run", False)), method=p.get("method", "svd"),
                      rank=p.get("rank"), weighting=p.get("weighting", "fit"))
    return {"version": out.version, "published": out.published, "reason": out.reason, "slot": p.get("slot")}


def last_scheduled_run(db: Database) -> dt.datetime | None:
    """The slot of the latest scheduled release job, or the latest release, whichever is later."""
    with db.read() as s:
        slots = [j.payload.get("slot") for j in s.scalars(
            select(Job).where(Job.kind == "release").order_by(Job.id.desc()).limit(20))]
        published = s.scalar(select(Release.published_at).order_by(Release.published_at.desc()).limit(1))
    times = [dt.datetime.fromisoformat(x) for x in slots if x]
    if published is not None:
        times.append(published)
    return max(times) if times else None


def schedule_tick(settings: HubSettings, db: Database, now: dt.datetime | None = None) -> int | None:
    """Enqueue the release job if a slot is due; returns its job id (None if nothing was due)."""
    from quantgrid.hub.server.jobs import enqueue_once
    from quantgrid.merge.release import next_due

    now = now or dt.datetime.now(dt.timezone.utc)
    due = next_due(settings.release_schedule, last_scheduled_run(db), now)
    if due > now:
        return None
    log.info("release slot %s is due; enqueuing the release job", due.isoformat())
    return enqueue_once(db, "release", {"slot": due.isoformat()}, dedupe_key=f"release:{due.isoformat()}",
                        max_attempts=settings.job_max_attempts)


def _scheduler_loop(settings: HubSettings, db: Database, stop: threading.Event, period_s: float = 60.0) -> None:
    while not stop.is_set():
        try:
            schedule_tick(settings, db)
        except Exception:  # the scheduler must outlive a database hiccup
            log.exception("release scheduler tick failed")
        stop.wait(period_s)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Runs with the app (FastAPI merges router lifespans): the release scheduler thread."""
    settings: HubSettings = app.state.settings
    sync_current_file(settings, app.state.db)
    schedule = getattr(settings, "release_schedule", None)
    stop, thread = threading.Event(), None
    if schedule:
        thread = threading.Thread(target=_scheduler_loop, args=(settings, app.state.db, stop),
                                  name="hub-release-scheduler", daemon=True)
        thread.start()
    yield
    stop.set()
    if thread is not None:
        thread.join(timeout=5)


# ------------------------------------------------------------------ HTTP


router = APIRouter(prefix="/v1/releases", tags=["releases"], lifespan=_lifespan)
DB = Annotated[Database, Depends(get_db)]
Settings = Annotated[HubSettings, Depends(get_settings)]
Blobs = Annotated[BlobStore, Depends(get_blobs)]
Version = Annotated[str, PathParam(pattern=VERSION_PATTERN, description="CalVer YYYY.WW or YYYY.WW.N")]


def _out(r: Release) -> S.ReleaseOut:
    return S.ReleaseOut.model_validate(r)


def published(db: Database, version: str) -> Release:
    with db.read() as s:
        r = s.scalar(select(Release).where(Release.version == version, Release.status == "published"))
    if r is None:
        raise NotFound(f"no published release {version}", hint="GET /v1/releases lists them")
    return r


@router.get("", response_model=S.ReleaseList)
def list_releases(db: DB, _user: OptionalUser) -> S.ReleaseList:
    """Every published release, newest first, and which one is in service."""
    from quantgrid.merge.release import version_key

    with db.read() as s:
        rows = list(s.scalars(select(Release).where(Release.status == "published")))
    rows.sort(key=lambda r: version_key(r.version), reverse=True)
    current = next((r.version for r in rows if r.is_current), None)
    return S.ReleaseList(current=current, items=with_grades(db, [_out(r) for r in rows]))


@router.get("/latest", response_model=S.ReleaseOut)
def latest(db: DB, _user: OptionalUser) -> S.ReleaseOut:
    """The release in service (after a rollback, that is not the newest)."""
    r = current_release(db)
    if r is None:
        raise NotFound("this hub has not published a release yet", hint="releases run weekly; try again later")
    return with_grades(db, [_out(r)])[0]


@router.get("/{version}", response_model=S.ReleaseOut)
def get_release(version: Version, db: DB, _user: OptionalUser) -> S.ReleaseOut:
    return with_grades(db, [_out(published(db, version))])[0]


@router.get("/{version}/download", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "the release as a zip"}})
def download(version: Version, db: DB, settings: Settings, blobs: Blobs, _user: OptionalUser):
    """The release's PEFT adapter directory (with release.json and notes) as a zip."""
    r = published(db, version)
    filename = f"quantgrid-release-{version}.zip"
    if ReleaseArchives.is_ref(r.path):
        archives = open_release_archives(settings, blobs)
        if archives is None:
            raise NotFound(f"release {version}'s files are missing on the hub", hint="tell the hub admin")
        f = archives.open(r.path)  # opened here: a missing object is a 404, not a broken stream

        def stream():
            with f:
                while block := f.read(1 << 20):
                    yield block

        return StreamingResponse(stream(), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    src = Path(r.path or "")
    if not (src / lora_files.WEIGHTS).is_file():
        raise NotFound(f"release {version}'s files are missing on the hub", hint="tell the hub admin")
    cached = release_root(settings) / f".{version}.zip"
    if not cached.is_file():
        with atomic_path(cached) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(src.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    zf.write(p, p.name)
    return FileResponse(cached, media_type="application/zip", filename=filename)
