"""CLI: `quantgrid recipe show|hash|check`."""

from __future__ import annotations

from pathlib import Path

import typer

from quantgrid.cli._common import console

recipe_app = typer.Typer(help="The standardized training recipe: show it, hash it, check a recipe file.",
                         no_args_is_help=True)


@recipe_app.command("show")
def show(
    file: Path = typer.Argument(None, help="A recipe YAML to print resolved (default: the standard recipe)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the YAML to this file instead of printing it."),
) -> None:
    """Print the recipe as YAML (every setting, defaults filled in)."""
    from quantgrid.recipe import Recipe

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
