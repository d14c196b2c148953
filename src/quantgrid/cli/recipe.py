"""CLI: `quantgrid recipe show|hash|check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field

from quantgrid.cli._common import console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.settings import settings_of, validate

recipe_app = typer.Typer(help="The standardized training recipe: show it, hash it, check a recipe file.",
                         no_args_is_help=True)


class ShowOptions(BaseModel):
    """Where ``recipe show`` writes; the recipe itself is the positional file."""

    model_config = ConfigDict(extra="forbid")

    out: Path | None = Field(None, description="write the YAML to this file instead of printing it",
                             json_schema_extra={"short": "-o"})


@recipe_app.command("show")
@settings_command(Flags(settings_of(ShowOptions)))
def show(
    file: Annotated[Path | None, typer.Argument(
        help="A recipe YAML to print resolved (default: the standard recipe).")] = None,
    **given: Any,
) -> None:
    """Print the recipe as YAML (every setting, defaults filled in)."""
    from quantgrid.recipe import Recipe

    out = validate(ShowOptions, given, settings_of(ShowOptions), what="recipe show option",
                   hint="see `quantgrid recipe show --help`").out
    rec = Recipe.load(file) if file else Recipe()
    if out:
        rec.save(out)
        console.print(f"recipe {rec.hash()} written to [bold]{out}[/]", highlight=False)
    else:
        typer.echo(rec.to_yaml(), nl=False)


@recipe_app.command("hash")
def hash_cmd(file: Path = typer.Argument(None, help="Recipe YAML (default: the standard recipe).")) -> None:
    """Print the recipe's content hash: the same settings give the same hash, whatever the key order."""
    from quantgrid.recipe import Recipe

    typer.echo((Recipe.load(file) if file else Recipe()).hash())


@recipe_app.command("check")
def check(file: Path = typer.Argument(..., help="Recipe YAML to validate.")) -> None:
    """Validate a recipe file and say how it differs from the standard recipe."""
    from quantgrid.recipe import Recipe

    rec = Recipe.load(file)
    differ = rec.standard_fields_differ(Recipe())
    console.print(f"[green]valid[/] recipe {rec.hash()} (base {rec.base_model}@{rec.base_revision}, "
                  f"template {rec.prompt_template})", highlight=False)
    if differ:
        console.print(f"[yellow]non-standard:[/] {', '.join(differ)} differ from the standard recipe; the hub "
                      "cannot merge such an adapter with others", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(recipe_app, name="recipe", help="The standardized training recipe: show it, hash it, check a file.")
