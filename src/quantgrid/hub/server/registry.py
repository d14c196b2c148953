"""``GET /v1/registry.yaml``: every accepted adapter by name and version (see quantgrid.registry).

Names and the adapter each one says it ``improves`` come from the accepted zip's manifest
(read once per blob and cached: blobs never change); the scores are the hub's own hidden-
benchmark measurements recorded at acceptance; the release is the newest published one
whose manifest lists the adapter.
"""

from __future__ import annotations

import functools
import json
import zipfile
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from quantgrid.adapter import MANIFEST
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.deps import OptionalUser, get_blobs, get_db
from quantgrid.hub.server.models import Adapter, Release, User
from quantgrid.hub.server.storage import BlobStore
from quantgrid.registry import Accepted, Registry, Scores, assign_versions

MAX_MANIFEST_BYTES = 1 << 20
router = APIRouter(prefix="/v1", tags=["registry"])
DB = Annotated[Database, Depends(get_db)]
Blobs = Annotated[BlobStore, Depends(get_blobs)]


def zip_manifest(f: BinaryIO) -> dict[str, Any] | None:
    """A submission zip's quantgrid.json (``f`` a binary file), or None when it has none, it is
    over MAX_MANIFEST_BYTES or not a JSON object, or the zip is unreadable; OSError from ``f``
    itself passes through."""
    try:
        with zipfile.ZipFile(f) as zf:
            info = zf.getinfo(MANIFEST)
            if info.file_size > MAX_MANIFEST_BYTES:
                return None
            m = json.loads(zf.read(info))
    except (KeyError, ValueError, zipfile.BadZipFile, RuntimeError):  # RuntimeError: an encrypted entry
        return None
    return m if isinstance(m, dict) else None


def _manifest_fields(blobs: BlobStore, sha256: str) -> tuple[str | None, str | None, str | None]:
    """(name, improves, base name) from an accepted zip's quantgrid.json; Nones when unreadable."""
    try:
        return _cached_manifest_fields(blobs, sha256)
    except OSError:  # the store failed this time: not cached, the next build reads it again
        return None, None, None


@functools.lru_cache(maxsize=4096)
def _cached_manifest_fields(blobs: BlobStore, sha256: str) -> tuple[str | None, str | None, str | None]:
    with blobs.open(sha256) as f:
        m = zip_manifest(f)
    if m is None:  # the zip itself: the same bytes always give None
        return None, None, None
    base = (m.get("base_model") or {}).get("name") if isinstance(m.get("base_model"), dict) else None
    return m.get("name"), m.get("improves"), base


def build_registry(db: Database, blobs: BlobStore) -> Registry:
    from quantgrid.merge.release import version_key

    with db.read() as s:
        rows = s.execute(select(Adapter, User.name).join(User, User.id == Adapter.user_id).order_by(Adapter.id)).all()
        releases = list(s.scalars(select(Release).where(Release.status == "published")))
    releases.sort(key=lambda r: version_key(r.version), reverse=True)
    in_release: dict[int, str] = {}
    for r in releases:  # newest first: the first release found for an adapter is its newest
        for a in (r.manifest or {}).get("adapters", []):
            if isinstance(a, dict) and isinstance(a.get("id"), int):
                in_release.setdefault(a["id"], r.version)
    accepted = []
    for adapter, author in rows:
        name, improves, base = _manifest_fields(blobs, adapter.blob_sha256)
        info = adapter.delta_info or {}
        scores = Scores(metric="loss", higher_is_better=False, improvement=adapter.score,
                        adapter_score=info.get("adapter_loss"), base_model_score=info.get("base_loss"),
                        hidden_loss=info.get("adapter_loss"), hidden_benchmark=info.get("benchmark_id"))
        accepted.append(Accepted(id=adapter.id, author=author, base_model=base or "unknown", name=name,
                                 improves=improves, scores=scores, release=in_release.get(adapter.id),
                                 accepted_at=adapter.accepted_at.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return Registry(source="hub", adapters=assign_versions(accepted))


@router.get("/registry.yaml", response_class=PlainTextResponse,
            responses={200: {"content": {"application/yaml": {}}}})
def registry_yaml(db: DB, blobs: Blobs, _user: OptionalUser) -> PlainTextResponse:
    """LocoLLM's registry.yaml: every accepted adapter, its version, author, base, scores and release."""
    return PlainTextResponse(build_registry(db, blobs).to_yaml(), media_type="application/yaml")
