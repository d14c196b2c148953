"""The ``validate`` job: load one submission and what it is judged against, run the pure
validation pipeline (``quantgrid.hub.validate.validate_submission``), record the verdict.

Everything that touches the hub's database and storage is here; the pipeline itself only
sees bytes, the recipe, the hidden sets and the current release directory.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from quantgrid.hub.server.jobs import JobContext
from quantgrid.hub.server.models import Adapter, User
from quantgrid.hub.server.submissions import record_verdict, start_validation

log = logging.getLogger(__name__)


def handle_validate_job(ctx: JobContext) -> dict[str, Any]:
    """Judge submission ``payload["submission_id"]`` and record accept/reject with its report."""
    from quantgrid.hub.benchmark import hidden_sets
    from quantgrid.hub.server.improves import improves_check
    from quantgrid.hub.server.releases import current_release_dir, published_release_dirs
    from quantgrid.hub.validate import ValidationConfig, factor_cache, references, validate_submission

    settings = ctx.settings
    sub_id = int(ctx.payload["submission_id"])
    sub = start_validation(ctx.db, sub_id)
    if sub.status != "validating":  # already decided by an earlier attempt
        return {"submission_id": sub_id, "status": sub.status, "skipped": True}
    blobs = ctx.blobs
    data = blobs.read_bytes(sub.blob_sha256)
    rejection = improves_check(ctx.db, blobs, data, exclude_id=sub_id)  # before any model is loaded
    if rejection is not None:
        record_verdict(ctx.db, settings, sub_id, accepted=False, report=rejection)
        return {"submission_id": sub_id, "accepted": False, "stage": "static", "check": "improves"}
    with ctx.db.read() as s:
        rows = s.execute(select(Adapter.id, Adapter.blob_sha256, User.name).join(User, User.id == Adapter.user_id)
                         .where(Adapter.id != sub_id).order_by(Adapter.id)).all()
        owner = s.scalar(select(User.name).where(User.id == sub.user_id))
    cache = factor_cache(settings)
    accepted, _ = references(settings, rows, blobs.read_bytes, cache)
    # From the database (and, with object storage, fetched from it): a worker on another host
    # has no release directories of its own.
    releases = published_release_dirs(settings, ctx.db)
    release_dir = current_release_dir(settings, ctx.db)
    verdict = validate_submission(
        data, recipe=settings.recipe, base_path=settings.recipe.base_model, hidden=hidden_sets(settings),
        accepted=accepted, release_dir=release_dir, releases=releases, contributor=owner,
        config=ValidationConfig.from_settings(settings),
        progress=lambda msg: (log.info("submission %s: %s", sub_id, msg), ctx.heartbeat()))
    if verdict.accepted and verdict.weights is not None:
        cache.put(sub.blob_sha256, verdict.weights)  # later validations and releases read these factors
    record_verdict(ctx.db, settings, sub_id, accepted=verdict.accepted, report=verdict.report,
                   score=verdict.score if verdict.accepted else None, delta_info=verdict.delta_info)
    return {"submission_id": sub_id, "accepted": verdict.accepted, "stage": verdict.report["stage"],
            "check": verdict.report["check"]}
