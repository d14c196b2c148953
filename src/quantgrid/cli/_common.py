"""What every CLI module shares: consoles, error printing, and how the servers listen.

User text (paths, names, messages that quote them) is escaped before Rich renders it, so a
path like ``data[/red].jsonl`` prints as itself instead of breaking the markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from quantgrid.errors import QuantGridError

_OS_HINTS = {  # errno name -> what to do
    "EACCES": "choose a path you may write to, or fix its permissions",
    "EPERM": "choose a path you may write to, or fix its permissions",
    "EROFS": "the file system is read-only: choose another path",
    "ENOSPC": "free some disk space, or write somewhere else",
    "ENOENT": "check the path: a file or folder on it does not exist",
    "EISDIR": "pass a file path, not a directory",
    "ENOTDIR": "a part of the path is a file, not a directory",
    "EEXIST": "remove it first, or choose another path",
}

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


def os_error(e: OSError) -> QuantGridError:
    """An OSError as one line naming the path and a hint."""
    import errno

    name = errno.errorcode.get(e.errno or 0, "")
    # A rename into place names the temp file first and the user's path second.
    where = f"{e.filename2 or e.filename}: " if e.filename else ""
    return QuantGridError(f"{where}{e.strerror or e}",
                          hint=_OS_HINTS.get(name, "check the path and its permissions, then run the command again"))


def input_error(e: Exception) -> QuantGridError | None:
    """A library's "this file is not what it claims" as a one-line error, or None when ``e``
    is not one (then it is a bug, and its traceback is what a report needs)."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a core dependency
        SafetensorError = ()  # type: ignore[assignment]  # noqa: N806
    if SafetensorError and isinstance(e, SafetensorError):
        return QuantGridError(f"a .safetensors file is corrupt or not safetensors ({e})",
                              hint="train, export or download the adapter again; `quantgrid check DIR` "
                                   "lists an adapter's files")
    return None


# A request's header block is held in memory until it ends. uvicorn's default parser
# (httptools) sets no bound, so one client could make a server hold megabytes per connection;
# h11 with this cap answers 400 past it. 64 KiB is well above any real client's headers.
MAX_HEADER_BYTES = 64 * 1024


def run_server(app, **kw) -> None:
    """``uvicorn.run`` for ``quantgrid serve`` and ``quantgrid hub serve``, with bounded headers."""
    import uvicorn

    uvicorn.run(app, http="h11", h11_max_incomplete_event_size=MAX_HEADER_BYTES, **kw)
