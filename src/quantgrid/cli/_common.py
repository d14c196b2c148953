"""What every CLI module shares: consoles and error printing.

User text (paths, names, messages that quote them) is escaped before Rich renders it, so a
path like ``data[/red].jsonl`` prints as itself instead of breaking the markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from quantgrid.errors import QuantGridError

console = Console()
err_console = Console(stderr=True)


def report_error(e: QuantGridError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {escape(e.hint)}", highlight=False, soft_wrap=True)


def report_usage_error(message: str, command_path: str) -> None:
    """A flag the command line parser refused (unknown, missing, not a number, not a choice)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    err_console.print(f"[yellow]hint:[/] see `{escape(command_path)} --help`", highlight=False, soft_wrap=True)
