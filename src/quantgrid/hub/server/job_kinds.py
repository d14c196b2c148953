"""Every kind of background job the hub runs, imported by name: kind -> handler, and the hook
run once when a job of that kind is given up on (see ``jobs.py`` for the queue itself).

A new kind is one import and one line here; a handler that fails to import fails the hub's
start instead of leaving its jobs queued forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from quantgrid.errors import ConfigError
from quantgrid.hub.server.human_eval import JOB_KIND as HUMAN_EVAL_JOB
from quantgrid.hub.server.human_eval import handle_human_eval_job
from quantgrid.hub.server.jobs import Handler
from quantgrid.hub.server.releases import handle_release_job
from quantgrid.hub.server.submissions import VALIDATE_JOB, give_up_validation
from quantgrid.hub.server.validation_job import handle_validate_job

HANDLERS: dict[str, Handler] = {
    VALIDATE_JOB: handle_validate_job,
    "release": handle_release_job,
    HUMAN_EVAL_JOB: handle_human_eval_job,
}
# kind -> hook(db, job), run once when a job of that kind runs out of attempts.
GIVE_UP: dict[str, Callable] = {
    VALIDATE_JOB: give_up_validation,
}


def handlers(kinds: Iterable[str] | None = None) -> dict[str, Handler]:
    """The handlers of ``kinds`` (default: all); ConfigError naming the known kinds otherwise."""
    if kinds is None:
        return dict(HANDLERS)
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in HANDLERS]
    if unknown:
        raise ConfigError(f"unknown job kind(s): {', '.join(unknown)}",
                          hint=f"the hub's job kinds are: {', '.join(HANDLERS)}")
    return {k: HANDLERS[k] for k in kinds}
