"""CLI: ``quantgrid hub worker`` (run validation/release jobs) and ``quantgrid hub rotate-benchmark``."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import typer
from pydantic import BaseModel, Field

from quantgrid.cli._common import console, err_console
from quantgrid.cli.hub import HUB_FLAGS, hub_app, load_hub
from quantgrid.cli.options import Flags, settings_command
from quantgrid.settings import settings_of, validate


class WorkerOptions(BaseModel):
    """How long one ``hub worker`` runs and what it takes."""

    kind: list[str] = Field(default_factory=list, description="job kinds to take (repeatable): validate, release "
                            "(default: all with a handler)")
    max_jobs: int | None = Field(None, ge=1, description="stop after this many jobs")
    once: bool = Field(False, description="run the next waiting job, if any, then exit")


class ConfirmOptions(BaseModel):
    yes: bool = Field(False, description="do not ask for confirmation", json_schema_extra={"short": "-y"})


WORKER_FLAGS = Flags(settings_of(WorkerOptions), panel="Worker")


def _split(given: dict[str, Any], flags: Flags) -> dict[str, Any]:
    """Take the command's own settings out of ``given`` (what remains is hub settings)."""
    return {k: given.pop(k) for k in list(given) if k in flags.settings}


@settings_command(WORKER_FLAGS, HUB_FLAGS)
def worker(**given: Any) -> None:
    """Run the job worker: validate submissions (static checks, proof of loss on the hidden benchmark, duplicates, trial merge) until Ctrl-C.

    Run as many as you like, on as many machines as share the database: jobs are claimed atomically, a crashed worker's job is retried, and a job that keeps failing stops after job_max_attempts with a report.
    """
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.server.jobs import default_worker_id, resolve_handlers, run_one, run_worker

    opts = validate(WorkerOptions, _split(given, WORKER_FLAGS), WORKER_FLAGS.settings, what="worker option",
                    hint="see `quantgrid hub worker --help`")
    kind, max_jobs, once = opts.kind, opts.max_jobs, opts.once
    settings = load_hub(**given)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = resolve_handlers(kind or None)
    if not handlers:
        raise typer.BadParameter(f"no handler for job kind(s) {', '.join(kind or [])}", param_hint="--kind")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker_id = default_worker_id()
    err_console.print(f"worker {worker_id}: kinds {', '.join(handlers)}, db {settings.database_url}, "
                      f"base {settings.recipe.base_model}", highlight=False)
    try:
        if once:  # one job if one is waiting, else nothing: for cron and scripts
            ran = int(run_one(Database(settings.database_url), settings, handlers, worker_id))
        else:
            ran = run_worker(settings, handlers, stop, worker_id=worker_id, max_jobs=max_jobs)
    except KeyboardInterrupt:
        stop.set()
        ran = None
    if ran is not None:
        console.print(f"worker {worker_id} ran {ran} job(s)", highlight=False)


@settings_command(Flags(settings_of(ConfirmOptions)), HUB_FLAGS)
def rotate_benchmark(**given: Any) -> None:
    """Make a new benchmark secret, so the hidden benchmark's templated items are all new.

    Do it whenever the hidden items may have leaked (e.g. by probing); later validations and releases use the new items.
    """
    from quantgrid.hub.benchmark import rotate_secret

    yes = bool(given.pop("yes", False))
    settings = load_hub(**given)
    if not yes and not typer.confirm(f"Replace the benchmark secret in {settings.storage_dir}?"):
        raise typer.Exit(1)
    old, new = rotate_secret(settings)
    console.print(f"benchmark rotated: {old} -> {new} ({settings.benchmark_size} templated items)", highlight=False)


def register(app: typer.Typer) -> None:
    hub_app.command("worker")(worker)
    hub_app.command("rotate-benchmark")(rotate_benchmark)
