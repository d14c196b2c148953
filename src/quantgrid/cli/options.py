"""Typer options generated from a command's pydantic settings models.

A command declares which models (or which of their fields) are its flags; each field
becomes one option with the field's flag spellings, its description as the help text, its
default shown in the help, choices from a ``Literal``/``Enum`` and a ``--x/--no-x`` pair for
a bool. Nothing about a setting is written in the command, so a field added to the model
is a flag of every command that uses the model::

    @settings_command(Flags(settings_of(ServeSettings)))
    def serve(**given):            # given: the flags the user set, by flat name
        settings = validate(ServeSettings, given, ...)

Unset flags are not passed at all (every option defaults to ``None``), so the model's own
defaults, environment variables and ``--config`` files stay in charge of what is not given.
The flat names, aliases and flags come from :mod:`quantgrid.settings`.
"""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, SecretStr
from rich.markup import escape

from quantgrid.settings import Setting

_SIMPLE = (bool, int, float, str, Path)


@dataclass(frozen=True)
class Flags:
    """One group of generated options: settings, and the help panel of each section."""

    settings: Mapping[str, Setting]
    panels: Mapping[str, str] = field(default_factory=dict)  # "recipe.lora" -> "LoRA (recipe)"
    panel: str | None = None  # for settings whose section has no entry in ``panels``

    def panel_of(self, s: Setting) -> str | None:
        return self.panels.get(".".join(s.path[:-1]), self.panel)


def cli_type(annotation: Any) -> Any:
    """The type the command line parses for a field; the model converts the rest (a recipe
    path to a Recipe, ``NAME=DIR`` strings to a mapping)."""
    origin = typing.get_origin(annotation)
    if annotation in _SIMPLE or origin is typing.Literal:
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        inner = args[0] if args else str
        return list[inner] if inner in _SIMPLE or typing.get_origin(inner) is typing.Literal else list[str]
    if origin is dict:
        return list[str]
    if annotation is SecretStr or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return str
    return str


def _show(value: Any) -> str | None:
    if value is None or value == [] or value == {} or value == "":
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, SecretStr):
        return None
    return str(value)


def help_text(s: Setting) -> str:
    """The field's description as a sentence, plus its default; escaped for Rich."""
    text = s.description.strip()
    if text:
        if not text.split()[0].endswith(","):  # "cpu, cuda, ..." stays a list of names
            text = text[0].upper() + text[1:]
        if not text.endswith((".", "?", ")")):
            text += "."
    shown = _show(s.cli_default if s.cli_default is not None else s.default()) if s.has_default else None
    if shown is not None:
        text += f" [default: {shown}]"
    elif not s.has_default:
        text += " [required]"
    return escape(text)


def option_parameter(s: Setting, panel: str | None = None) -> inspect.Parameter:
    """One ``inspect.Parameter`` Typer reads as the setting's option."""
    kind = cli_type(s.annotation)
    decls = list(s.flags)
    if kind is bool and s.secondary:
        decls[0] = f"{decls[0]}/{s.secondary}"
    option = typer.Option(*decls, help=help_text(s), show_default=False, rich_help_panel=panel)
    return inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, option])


def _given(value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    return None if value is None or value == [] else value


def settings_command(*groups: Flags) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command function taking its own parameters plus ``**given``: the generated
    options are added to its signature, and it is called with the options the user set."""
    defaults = {s.name: s.cli_default for g in groups for s in g.settings.values()
                if s.cli and s.cli_default is not None}
    params = [(p, g) for g in groups for p in (option_parameter(s, g.panel_of(s)) for s in g.settings.values()
                                               if s.cli)]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        own_names = {p.name for p in own}
        clash = own_names & {p.name for p, _ in params}
        if clash:
            raise TypeError(f"{func.__name__}: parameters {sorted(clash)} are also generated settings")

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            mine = {k: kwargs.pop(k) for k in list(kwargs) if k in own_names}
            given = {k: v for k, v in ((k, _given(v)) for k, v in kwargs.items()) if v is not None}
            for k, d in defaults.items():
                given.setdefault(k, d)
            return func(**mine, **given)

        generated = [p for p, _ in params]
        positional = [p for p in own if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is p.VAR_POSITIONAL else p
                for p in own if p not in positional]
        command.__signature__ = sig.replace(parameters=[*positional, *rest, *generated])  # type: ignore[attr-defined]
        command.settings_groups = groups  # type: ignore[attr-defined]  # for tests and tooling
        return command

    return decorate
