"""The `quantgrid` command line: thin wrappers, parse -> one library call -> print.

Each journey has its own module with a ``register(app)`` function, so no module
grows past a few hundred lines and heavy libraries (torch) load only inside the
command that needs them: ``quantgrid --help`` stays instant.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from quantgrid import __version__
from quantgrid.cli import (
    alpha,
    base,
    contrib,
    contrib_tools,
    data,
    demo,
    evaluate,
    export,
    hub,
    hub_gc,
    hub_human_eval,
    hub_release,
    hub_validation,
    package,
    recipe,
    serve,
    train,
    vllm,
)
from quantgrid.cli._common import input_error, os_error, report_error, report_usage_error
from quantgrid.errors import QuantGridError


class _Group(TyperGroup):
    """Turns every QuantGridError, and every flag the parser refuses, into one clear line
    plus a hint, never a traceback."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except QuantGridError as e:
            report_error(e)
            raise typer.Exit(e.exit_code) from None
        except typer.TyperException as e:
            # click's usage errors (exit code 2), raised while a subcommand parses its flags;
            # "no arguments: show the help" is one of them and keeps its own handling.
            if getattr(e, "exit_code", None) != 2 or type(e).__name__ == "NoArgsIsHelpError" \
                    or not hasattr(e, "format_message"):
                raise
            sub = getattr(e, "ctx", None)
            report_usage_error(e.format_message(), sub.command_path if sub is not None else ctx.command_path)
            raise typer.Exit(2) from None
        except OSError as e:
            # The operating system refused a path the user gave (unwritable output, a directory
            # where a file was expected, a full disk): a runtime error, not a bug to trace.
            report_error(os_error(e))
            raise typer.Exit(1) from None
        except Exception as e:
            known = input_error(e)  # a corrupt file a library refused to parse
            if known is None:
                raise
            report_error(known)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="quantgrid",
    help="Train finance LoRA adapters on private data, prove them on a hub, merge and serve them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"quantgrid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Train finance LoRA adapters on private data, prove them on a hub, merge and serve them."""


# Order is the order of `quantgrid --help`: the contributor journey first.
for _module in (demo, data, base, recipe, train, evaluate, alpha, package, contrib, contrib_tools, hub, hub_validation,
                hub_release, hub_gc, hub_human_eval, serve, export, vllm):
    _module.register(app)


def main() -> None:
    app()
