"""The version rule at the hub's door: a submission whose manifest says it ``improves`` an
adapter must name an adapter the registry already holds (an accepted version of that name).

``registry.yaml`` (quantgrid.registry.assign_versions) only notes a dangling ``improves``
after the fact; checking it during validation tells the contributor at once, before any
model is loaded, instead of accepting an adapter whose version claim points at nothing.
"""

from __future__ import annotations

import io

from quantgrid.hub.server.db import Database
from quantgrid.hub.server.registry import build_registry, zip_manifest
from quantgrid.hub.server.storage import BlobStore


def declared_improves(data: bytes) -> str | None:
    """The ``improves`` of a submission zip's quantgrid.json (None when absent or unreadable:
    the static checks reject unreadable archives with their own reason)."""
    try:
        m = zip_manifest(io.BytesIO(data))
    except OSError:
        return None
    v = m.get("improves") if m is not None else None
    return v if isinstance(v, str) and v else None


def improves_check(db: Database, blobs: BlobStore, data: bytes, *, exclude_id: int | None = None) -> dict | None:
    """The rejection report if the submission names an adapter it improves that the registry
    does not hold; None when it names none or an existing one."""
    target = declared_improves(data)
    if target is None:
        return None
    entries = [e for e in build_registry(db, blobs).adapters if e.id != exclude_id]
    names = sorted({e.name for e in entries})
    if target in names:
        return None
    versions = {e.name: e.version for e in entries if e.current}
    known = ", ".join(f"{n} (v{versions[n]})" for n in sorted(versions)[:20]) or "none yet"
    message = (f"the manifest says this adapter improves {target!r}, but no accepted adapter of this hub is "
               f"named {target!r}")
    hint = (f"registered names: {known}. Package again with `--improves NAME` naming one of them, or without "
            "--improves to register it under its own name (GET /v1/registry.yaml lists the names)")
    return {"stage": "static", "check": "improves", "passed": False, "message": message, "hint": hint,
            "numbers": {}, "diagnoses": [], "notes": [],
            "checks": [{"stage": "static", "check": "improves", "passed": False, "message": message,
                        "numbers": {}}]}
