"""CLI: ``quantgrid serve`` — the OpenAI- and Ollama-compatible local server.

Every flag is a field of :class:`quantgrid.serve.settings.ServeSettings`.
"""

from __future__ import annotations

from typing import Any

import typer

from quantgrid.cli.options import Flags, settings_command
from quantgrid.errors import ConfigError
from quantgrid.serve.settings import ServeSettings
from quantgrid.settings import settings_of, validate

SERVE_FLAGS = (Flags(settings_of(ServeSettings)),)


def serve_settings(**given: Any) -> ServeSettings:
    """The flags the user set -> validated ServeSettings; errors name the flag."""
    settings = validate(ServeSettings, given, SERVE_FLAGS[0].settings, what="serve option",
                        hint="see `quantgrid serve --help`")
    if settings.local_enabled and not settings.base:
        raise ConfigError("--base is required when the local engine is on",
                          hint="pass --base DIR, or --no-local (LOCAL_PYTORCH_ENABLED=false) with --upstream")
    if not settings.local_enabled and not settings.upstreams:
        raise ConfigError("the local engine is off (--no-local or LOCAL_PYTORCH_ENABLED=false) but no "
                          "--upstream is given", hint="add --upstream NAME=URL, or unset LOCAL_PYTORCH_ENABLED")
    return settings


@settings_command(*SERVE_FLAGS)
def serve(**given: Any) -> None:
    """Serve the base, the release and named adapters over OpenAI (/v1) and Ollama (/api) APIs.

    Model names: 'quantgrid' (base + release), 'quantgrid:NAME' (an adapter), 'base', 'auto'
    (the router picks). Set LOCAL_PYTORCH_ENABLED=false to send everything to the upstreams.
    """
    settings = serve_settings(**given)

    from quantgrid.cli._common import console, run_server
    from quantgrid.serve.app import create_app

    with console.status("loading the base model and adapters..."):
        app = create_app(settings)
    st = app.state.qg
    port = 11434 if getattr(settings, "ollama", False) else settings.port
    names = st.router.model_names() if st.router else ["(upstreams only)"]
    console.print(f"[bold]quantgrid serve[/] on http://{settings.host}:{port}  models: {', '.join(names)}",
                  highlight=False)
    if st.upstreams.upstreams:
        console.print("fallback: " + " -> ".join(u.name for u in st.upstreams.upstreams), highlight=False,
                      markup=False)
    run_server(app, host=settings.host, port=port, log_level=settings.log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
