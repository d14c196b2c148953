"""CLI: ``quantgrid vllm command`` and ``quantgrid vllm deploy`` — vLLM serves adapters and releases.

``command`` prints (or with ``--run`` execs) vLLM's OpenAI server command line for a base,
named adapters and the hub's release; ``deploy`` keeps a running vLLM server on the hub's
latest release. Neither imports vLLM or torch: vLLM lives in its own virtualenv.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

vllm_app = typer.Typer(name="vllm", no_args_is_help=True,
                       help="Serve adapters and hub releases with vLLM's OpenAI server (installed by "
                            "scripts/vllm-cpu.sh), and swap new releases in without a restart.")

CACHE = "~/.cache/quantgrid/releases"


def _default_python() -> str:
    venv = Path(".venv-vllm/bin/python")
    return str(venv.resolve()) if venv.is_file() else "python"


@vllm_app.command("command")
def command(
    base: Annotated[str, typer.Option("--base", help="Base model directory (or Hugging Face id) vLLM loads")],
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", help="NAME=PATH of an adapter vLLM serves as model NAME; repeat for more")] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="Hub URL to resolve --release on")] = None,
    release: Annotated[str | None, typer.Option(
        "--release", help="Release served as model 'quantgrid': 'latest', a version YYYY.WW (with --hub), "
                          "or a release directory")] = None,
    release_cache: Annotated[str, typer.Option("--release-cache", help="Where downloaded releases go")] = CACHE,
    host: Annotated[str, typer.Option("--host", help="Address vLLM listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port vLLM listens on")] = 8000,
    python: Annotated[str | None, typer.Option(
        "--python", help="Python of vLLM's virtualenv [default: .venv-vllm/bin/python if present]")] = None,
    max_lora_rank: Annotated[int | None, typer.Option(
        "--max-lora-rank", min=1, help="Room for larger releases later [default: the largest adapter's rank, "
                                       "rounded up to a rank vLLM accepts]")] = None,
    max_loras: Annotated[int | None, typer.Option(
        "--max-loras", min=1, help="Adapters in one batch [default: all of them]")] = None,
    chat_template: Annotated[Path | None, typer.Option(
        "--chat-template", help="Jinja chat template [default: the release's (or first adapter's) "
                                "chat_template.jinja]")] = None,
    run: Annotated[bool, typer.Option("--run", help="Exec the command instead of printing it")] = False,
    extra: Annotated[list[str] | None, typer.Argument(
        help="More vLLM flags, after `--` (e.g. -- --dtype float32 --max-model-len 1024)")] = None,
) -> None:
    """Print (or --run) vLLM's OpenAI server command for --base, --adapter NAME=PATH and the release."""
    from quantgrid.serve.deploy import resolve_release
    from quantgrid.serve.vllm import build_command, parse_adapters

    ref = resolve_release(release, hub, release_cache)[0] if release else None
    cmd = build_command(base, parse_adapters(adapter or []), ref, host=host, port=port,
                        python=python or _default_python(), max_lora_rank=max_lora_rank, max_loras=max_loras,
                        chat_template=chat_template, extra=extra)
    argv = cmd.argv()
    if not run:
        typer.echo(shlex.join(argv))
        return
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}  # lets `quantgrid vllm deploy` swap
    os.execvpe(argv[0], argv, env)


@vllm_app.command("deploy")
def deploy(
    vllm_url: Annotated[str, typer.Option("--vllm-url", help="The running vLLM server, e.g. http://127.0.0.1:8000")],
    hub: Annotated[str, typer.Option("--hub", help="Hub URL whose latest release is deployed")],
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between release checks")] = 300.0,
    release_cache: Annotated[str, typer.Option("--release-cache", help="Where downloaded releases go")] = CACHE,
    max_lora_rank: Annotated[int | None, typer.Option(
        "--max-lora-rank", min=1, help="The server's --max-lora-rank: refuse larger releases before unloading")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="VLLM_API_KEY",
                                                help="vLLM's --api-key, if it has one")] = None,
    once: Annotated[bool, typer.Option("--once", help="Check once and exit (1 if the swap failed)")] = False,
) -> None:
    """Keep vLLM's 'quantgrid' model on the hub's latest release: swap it in with /v1/unload_lora_adapter +
    /v1/load_lora_adapter when it changes, without restarting vLLM (vLLM needs
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""
    from quantgrid.serve.deploy import HubReleaseSource
    from quantgrid.serve.vllm import VllmDeployer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    deployer = VllmDeployer(vllm_url, HubReleaseSource(hub, release_cache), interval_s=interval,
                            api_key=api_key, max_lora_rank=max_lora_rank)
    try:
        if once:
            failures = deployer.failures
            deployer.check_now()
            if deployer.failures > failures:
                raise typer.Exit(1)
            return
        deployer.run()
    except KeyboardInterrupt:
        pass
    finally:
        deployer.close()


def register(app: typer.Typer) -> None:
    app.add_typer(vllm_app)
