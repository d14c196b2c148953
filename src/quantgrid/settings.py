"""Settings declared once: a pydantic model's fields are at the same time the Python keyword
arguments, the keys of a ``--config`` YAML file and the CLI flags.

What a field says about itself, beyond its type, default and ``description`` (the help
text), goes in ``json_schema_extra``:

``flag``
    the CLI spelling when it is not ``--`` plus the name with dashes (``"--lora-rank"``;
    a bool may give its pair, ``"--4bit/--no-4bit"``).
``name``
    the flat name (keyword argument, YAML key) when it is not the field name (``lora_rank``
    for ``recipe.lora.r``).
``short``
    a one-letter spelling (``"-d"``).
``cli``
    ``False`` for a field no flag sets (the field's comment says why).
``cli_default``
    the value the command line uses when the flag is not given, when it differs from the
    Python default (``quantgrid eval`` writes ``results.json``; ``run_eval`` writes nothing).

Other accepted names (the Hugging Face ``TrainingArguments`` spellings, older names) are the
field's ``validation_alias=AliasChoices(field_name, alias, ...)``: pydantic accepts them in
YAML and Python, and each one is one more spelling of the same flag.

A field whose type is itself a pydantic model is walked into (``TrainConfig.recipe.lora.r``
is the flat setting ``lora_rank``), unless it has a ``flag``: then it is one option whose
string the model's own validator converts (``HubSettings.recipe`` from ``--recipe FILE``).

:func:`settings_of` lists a model's settings; :func:`nest` turns flat names into the model's
tree (unknown names fail with the nearest known one); :func:`validate` builds the model and
names the user's flag in every error. ``quantgrid.cli.options`` turns the same list into
Typer options. This module imports only pydantic.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import AliasChoices, BaseModel, ValidationError
from pydantic.fields import FieldInfo

from quantgrid.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """One leaf field of a settings model, with every name it answers to."""

    path: tuple[str, ...]  # field names from the root model, e.g. ("recipe", "lora", "r")
    name: str  # the flat name: keyword argument, YAML key, and the parameter name in the CLI
    aliases: tuple[str, ...]  # other flat names accepted for it (validation aliases)
    flags: tuple[str, ...]  # CLI spellings, the primary one first ("--lora-rank", "-d", ...)
    secondary: str | None  # the "off" spelling of a bool pair ("--no-4bit")
    field: FieldInfo
    annotation: Any  # the field's type, Optional stripped
    model: type[BaseModel]  # the model the field belongs to (its section)
    cli: bool  # whether a flag sets it

    @property
    def flag(self) -> str:
        return self.flags[0]

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def description(self) -> str:
        return self.field.description or ""

    @property
    def cli_default(self) -> Any:
        """What the command line uses when the flag is not given, if not the field's default."""
        return _extra(self.field).get("cli_default")

    @property
    def has_default(self) -> bool:
        return not self.field.is_required()

    def default(self) -> Any:
        """The field's default (calls a default factory), or ``None`` for a required field."""
        if self.field.is_required():
            return None
        return self.field.get_default(call_default_factory=True, validated_data={})


def _extra(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def _strip_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])  # ``FilePath | None``: the Annotated path inside
    if origin is typing.Annotated:
        return _strip_optional(typing.get_args(annotation)[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _dash(name: str) -> str:
    return "--" + name.replace("_", "-")


def _alias_names(field_name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str) and c != field_name]
    if isinstance(alias, str) and alias != field_name:
        return [alias]
    return []


@cache
def _walk(model: type[BaseModel], prefix: tuple[str, ...]) -> tuple[Setting, ...]:
    out: list[Setting] = []
    for field_name, field in model.model_fields.items():
        extra = _extra(field)
        annotation = _strip_optional(field.annotation)
        path = (*prefix, field_name)
        if _is_model(annotation) and "flag" not in extra and extra.get("cli", True) is not False \
                and "name" not in extra:
            out.extend(_walk(annotation, path))
            continue
        name = extra.get("name", field_name)
        aliases = [a for a in _alias_names(field_name, field) if a != name]
        flag, _, secondary = str(extra.get("flag") or _dash(name)).partition("/")
        if not secondary and annotation is bool:
            secondary = "--no-" + flag.removeprefix("--")
        flags = [flag, *([extra["short"]] if extra.get("short") else [])]
        flags += [_dash(a) for a in _alias_names(field_name, field) if _dash(a) not in flags]
        out.append(Setting(path=path, name=name, aliases=tuple(dict.fromkeys(aliases)), flags=tuple(flags),
                           secondary=secondary or None, field=field, annotation=annotation, model=model,
                           cli=extra.get("cli", True) is not False))
    return tuple(out)


def settings_of(model: type[BaseModel], *, only: Iterable[str] | None = None,
                exclude: Iterable[str] = ()) -> dict[str, Setting]:
    """The model's settings by flat name. ``only``/``exclude`` pick them by flat name."""
    items = _walk(model, ())
    only_set, excluded = (set(only) if only is not None else None), set(exclude)
    table: dict[str, Setting] = {}
    for s in items:
        if (only_set is not None and s.name not in only_set) or s.name in excluded:
            continue
        if s.name in table:
            raise TypeError(f"{model.__name__}: two settings are named {s.name!r}: "
                            f"{'.'.join(table[s.name].path)} and {'.'.join(s.path)}")
        table[s.name] = s
    return table


def lookup(table: Mapping[str, Setting]) -> dict[str, Setting]:
    """Every accepted flat name (names and aliases) -> its setting."""
    out: dict[str, Setting] = {}
    for s in table.values():
        for n in s.names:
            out.setdefault(n, s)
    return out


def nearest(name: str, known: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_name_error(name: str, table: Mapping[str, Setting], what: str) -> ConfigError:
    near = nearest(name, lookup(table))
    hint = f"did you mean {near!r}?" if near else f"known settings: {', '.join(sorted(table))}"
    return ConfigError(f"unknown {what} {name!r}", hint=hint)


def nest(table: Mapping[str, Setting], flat: Mapping[str, Any], *, what: str = "setting",
         into: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flat names -> the model's nested dict (``None`` values are skipped: not given).

    Every value is stored under its field name, so an alias and the field's name given
    together are one setting (the later wins)."""
    names = lookup(table)
    tree: dict[str, Any] = into if into is not None else {}
    for key, value in flat.items():
        if value is None:
            continue
        s = names.get(key)
        if s is None:
            raise unknown_name_error(key, table, what)
        node = tree
        for part in s.path[:-1]:
            node = node.setdefault(part, {})
        node[s.path[-1]] = value
    return tree


def flatten(table: Mapping[str, Setting], tree: Mapping[str, Any], *, what: str = "setting",
            _prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """The model's nested dict (as ``model_dump`` writes it; section keys may use aliases)
    -> flat names. The inverse of :func:`nest`."""
    by_loc: dict[tuple[str, ...], Setting] = {}
    sections: set[tuple[str, ...]] = set()
    for s in table.values():
        for n in (s.path[-1], *_alias_names(s.path[-1], s.field)):
            by_loc[(*s.path[:-1], n)] = s
        for i in range(1, len(s.path)):
            sections.add(s.path[:i])
    names = lookup(table)
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            loc = (*prefix, str(key))
            if loc in sections and isinstance(value, Mapping):
                walk(value, loc)
            elif loc in by_loc:
                flat[by_loc[loc].name] = value
            elif not prefix and key in names:  # a flat name at the top level
                flat[names[key].name] = value
            else:
                raise unknown_name_error(".".join(loc), table, what)

    walk(tree, _prefix)
    return flat


def flag_for_loc(table: Mapping[str, Setting], loc: tuple[Any, ...]) -> str | None:
    """The flag of the setting a pydantic error location points to (field names or aliases)."""
    parts = tuple(str(p) for p in loc if not isinstance(p, int))
    for s in table.values():
        for n in (s.path[-1], *_alias_names(s.path[-1], s.field)):
            full = (*s.path[:-1], n)
            if parts[:len(full)] == full:
                return s.flag if s.cli else s.name
    return None


def describe_errors(e: ValidationError, table: Mapping[str, Setting]) -> str:
    """One ``--flag: problem`` per error, naming the flag the user typed (or the setting's name)."""
    parts = []
    for err in e.errors():
        loc = tuple(err.get("loc", ()))
        name = flag_for_loc(table, loc) or ".".join(str(p) for p in loc)
        msg = err.get("msg", "")
        if err.get("type") == "missing":
            msg = "required, and not given"
        elif err.get("type") == "extra_forbidden" and loc:
            near = nearest(str(loc[-1]), lookup(table))
            msg = "unknown setting" + (f" (did you mean {near!r}?)" if near else "")
        parts.append(f"{name}: {msg}" if name else msg)
    return "; ".join(parts)


def validate(model: type[BaseModel], tree: Mapping[str, Any], table: Mapping[str, Setting], *,
             what: str, hint: str) -> Any:
    """``model.model_validate(tree)``; a ValidationError becomes a ConfigError naming flags."""
    try:
        return model.model_validate(dict(tree))
    except ValidationError as e:
        raise ConfigError(f"invalid {what}: {describe_errors(e, table)}", hint=hint) from None
