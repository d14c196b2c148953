"""CLI: ``quantgrid serve`` — the OpenAI- and Ollama-compatible local server."""

from __future__ import annotations

import typer

from quantgrid.errors import ConfigError


def _parse_adapters(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {spec!r} is not NAME=DIR", hint="e.g. --adapter options=./adapters/options")
        if name in out:
            raise ConfigError(f"--adapter name {name!r} is given twice", hint="give each adapter its own name")
        out[name] = path
    return out


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        base: str = typer.Option(None, "--base", help="Base model: a Hugging Face id or a local directory."),
        release: str = typer.Option(None, "--release",
                                    help="Release to serve as the 'quantgrid' model: a directory, 'latest' or "
                                         "YYYY.WW (the last two need --hub)."),
        adapter: list[str] = typer.Option([], "--adapter", help="NAME=DIR: serve an adapter as 'quantgrid:NAME'. "
                                          "Repeatable."),
        hub: str = typer.Option(None, "--hub", help="Hub URL: resolve --release there and auto-deploy new releases."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8000, "--port", help="Port to listen on."),
        upstream: list[str] = typer.Option(
            [], "--upstream", help="Fallback: NAME=URL[,key_env=VAR][,model=M], URL ending in /v1. Repeatable; "
                                   "tried in order."),
        max_batch: int = typer.Option(16, "--max-batch", help="Requests decoded together."),
        max_slots: int = typer.Option(8, "--max-slots", help="Adapters held in memory at once (LRU)."),
        router: str = typer.Option("arrow", "--router", help="How 'auto' picks an adapter: arrow or keywords."),
        router_threshold: float = typer.Option(None, "--router-threshold",
                                               help="Minimum routing score (default: 0.2 arrow, 0.34 keywords)."),
        auto_fallback: str = typer.Option("release", "--auto-fallback",
                                          help="Where 'auto' goes when no adapter fits: release or upstream."),
        local_timeout: float = typer.Option(30.0, "--local-timeout",
                                            help="Seconds to the first local token before using an upstream."),
        poll_interval: float = typer.Option(300.0, "--poll-interval", help="Seconds between hub release checks."),
        device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1... (default: cuda if available)."),
        dtype: str = typer.Option(None, "--dtype", help="float32, bfloat16 or float16."),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Serve the base, the release and named adapters over OpenAI (/v1) and Ollama (/api) APIs.

        Model names: 'quantgrid' (base + release), 'quantgrid:NAME' (an adapter), 'base', 'auto'
        (the router picks). Set LOCAL_PYTORCH_ENABLED=false to send everything to the upstreams.
        """
        import pydantic

        from quantgrid.serve.settings import ServeSettings
        from quantgrid.serve.upstream import UpstreamConfig

        try:
            ups = [UpstreamConfig.parse_spec(u) for u in upstream]
            settings = ServeSettings(
                base=base, release=release, adapters=_parse_adapters(adapter), hub=hub, upstreams=ups,
                max_batch=max_batch, max_slots=max_slots, router_method=router, router_threshold=router_threshold,
                auto_fallback=auto_fallback, local_timeout_s=local_timeout, poll_interval_s=poll_interval,
                device=device, dtype=dtype)
        except (ValueError, pydantic.ValidationError) as e:
            raise ConfigError(f"invalid serve option: {_first_error(e)}", hint="see `quantgrid serve --help`") from None
        if settings.local_enabled and not settings.base:
            raise ConfigError("--base is required when the local engine is on",
                              hint="pass --base DIR, or set LOCAL_PYTORCH_ENABLED=false with --upstream")
        if not settings.local_enabled and not settings.upstreams:
            raise ConfigError("LOCAL_PYTORCH_ENABLED=false but no --upstream is given",
                              hint="add --upstream NAME=URL, or unset LOCAL_PYTORCH_ENABLED")

        import uvicorn

        from quantgrid.cli._common import console
        from quantgrid.serve.app import create_app

        with console.status("loading the base model and adapters..."):
            app = create_app(settings)
        st = app.state.qg
        names = st.router.model_names() if st.router else ["(upstreams only)"]
        console.print(f"[bold]quantgrid serve[/] on http://{host}:{port}  models: {', '.join(names)}")
        if st.upstreams.upstreams:
            console.print("fallback: " + " -> ".join(u.name for u in st.upstreams.upstreams))
        uvicorn.run(app, host=host, port=port, log_level=log_level)


def _first_error(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg')}"
    return str(e)
