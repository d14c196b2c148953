"""What every CLI module shares: consoles and error printing."""

from __future__ import annotations

from rich.console import Console

from quantgrid.errors import QuantGridError

console = Console()
err_console = Console(stderr=True)


def report_error(e: QuantGridError) -> None:
    err_console.print(f"[bold red]error:[/] {e.message}", highlight=False, soft_wrap=True)
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {e.hint}", highlight=False, soft_wrap=True)
