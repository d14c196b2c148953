"""CLI: `quantgrid data check|normalize|split|leakage|finance|list`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from quantgrid.cli._common import console, err_console
from quantgrid.cli.options import Flags, settings_command
from quantgrid.data.settings import (
    CheckSettings,
    FinanceSettings,
    FromFeedbackSettings,
    LeakageSettings,
    NormalizeSettings,
    SplitSettings,
)
from quantgrid.errors import ConfigError, DataError
from quantgrid.settings import settings_of, validate

data_app = typer.Typer(help="Check, normalize and split datasets; built-in finance data.", no_args_is_help=True)

SOURCE_HELP = "A .jsonl or JSON-array file, or builtin:NAME (see `quantgrid data list`)."
Source = Annotated[str, typer.Argument(help=SOURCE_HELP)]


def settings(model: type[BaseModel], command: str, given: dict[str, Any]) -> Any:
    """The flags the user set -> the command's validated settings; errors name the flag."""
    return validate(model, given, settings_of(model), what=f"data {command} option",
                    hint=f"see `quantgrid data {command} --help`")


def _load(source: str, fmt: str | None, lenient: bool):
    import logging

    from quantgrid.data import load_examples_report

    # The skipped records are printed below; the library's log line would say it twice.
    logger = logging.getLogger("quantgrid.data.formats")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())

    report = load_examples_report(source, format=fmt, lenient=lenient)
    if report.skipped:
        err_console.print(f"[yellow]skipped {len(report.skipped)} bad record(s):[/] "
                          + escape("; ".join(f"{s.location}: {s.reason}" for s in report.skipped[:10]))
                          + (" ..." if len(report.skipped) > 10 else ""), highlight=False, soft_wrap=True)
    return report


def _out_format(report) -> str:
    return report.format if report.format in _formats() else "qa"


def _formats() -> dict:
    from quantgrid.data.formats import FORMATS

    return FORMATS


def _not_input(out: Path, source: str) -> None:
    if not source.startswith("builtin:") and Path(source).exists() and out.resolve() == Path(source).resolve():
        raise ConfigError(f"{out} is the input file; refusing to overwrite it", hint="choose another --out path")


def _tokenizer(name: str):
    """A model directory or id, or a tokenizer-only directory (no config.json needed)."""
    if (Path(name) / "tokenizer_config.json").is_file() and not (Path(name) / "config.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    from quantgrid.ml.models import load_tokenizer

    return load_tokenizer(name)


@data_app.command("check")
@settings_command(Flags(settings_of(CheckSettings)))
def check(source: Source, **given: Any) -> None:
    """Count, detected format, length statistics and warnings (duplicates, truncation, < 500 examples)."""
    from quantgrid.data.check import check_examples
    from quantgrid.recipe import Recipe

    s = settings(CheckSettings, "check", given)
    rec = Recipe.load(s.recipe) if s.recipe else Recipe()
    report = _load(source, s.fmt, s.lenient)  # before the (slower) tokenizer: a bad file fails fast
    tok = _tokenizer(s.tokenizer) if s.tokenizer else None
    result = check_examples(report, tokenizer=tok, template=s.template or rec.prompt_template,
                            max_seq_length=s.max_seq_length or rec.training.max_seq_length,
                            system_prompt=rec.system_prompt)
    if s.as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console.print(f"[bold]{escape(str(result.source))}[/]: {result.n_examples} examples, format "
                  f"[cyan]{escape(str(result.format))}[/]"
                  f"{f', {result.n_skipped} skipped' if result.n_skipped else ''}, {result.n_with_context} with context",
                  highlight=False, soft_wrap=True)
    table = Table(title=escape(f"lengths in {result.unit} (template {result.template})"), title_justify="left")
    for col in ("", "min", "mean", "median", "p95", "max"):
        table.add_column(col, justify="right" if col else "left")
    for name, s in result.lengths.items():
        table.add_row(escape(name), *(f"{v:g}" for v in (s.min, s.mean, s.median, s.p95, s.max)))
    console.print(table)
    near = "not checked" if result.near_duplicates is None else str(result.near_duplicates)
    console.print(f"exact duplicates: {result.exact_duplicates}   near-duplicate pairs: {near}   "
                  f"truncated at {result.max_seq_length}: {result.n_truncated}"
                  f"{' (estimated)' if result.truncation_estimated and result.n_truncated else ''}", highlight=False, soft_wrap=True)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(str(w))}", highlight=False, soft_wrap=True)
    if not result.warnings:
        console.print("[green]no problems found[/]")


@data_app.command("normalize")
@settings_command(Flags(settings_of(NormalizeSettings)))
def normalize(source: Source, **given: Any) -> None:
    """Replace prices, changes, percentages, dates and timestamps with <PRICE>, <CHANGE>, ... placeholders."""
    from quantgrid.data import write_records
    from quantgrid.data.normalize import DEFAULT_KINDS, normalize_examples
    from quantgrid.utils import atomic_write_text

    s = settings(NormalizeSettings, "normalize", given)
    out, changes, kinds, dedup, fmt, lenient = s.out, s.changes, s.kinds, s.dedup, s.fmt, s.lenient
    chosen = tuple(k.strip().upper().strip("<>") for k in kinds.split(",") if k.strip()) if kinds else DEFAULT_KINDS
    stem = source.split(":", 1)[1] if source.startswith("builtin:") else str(Path(source).with_suffix(""))
    out = out or Path(f"{stem}.normalized.jsonl")
    changes = changes or Path(f"{stem}.changes.jsonl")
    _not_input(out, source)
    _not_input(changes, source)
    report = _load(source, fmt, lenient)
    result = normalize_examples(report.examples, chosen, dedup=dedup)
    # Nothing is written until everything above succeeded; each write is atomic.
    write_records(out, result.examples, _out_format(report))
    atomic_write_text(changes, "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in result.changes))
    counts = ", ".join(f"{k} {v}" for k, v in result.counts().items()) or "none"
    console.print(f"{len(result.examples)} examples written to [bold]{escape(str(out))}[/] ({result.changed_examples} changed; "
                  f"placeholders: {counts}; {result.duplicates_removed} duplicates removed)", highlight=False, soft_wrap=True)
    console.print(f"{len(result.changes)} changes recorded in [bold]{escape(str(changes))}[/]", highlight=False,
                  soft_wrap=True)


@data_app.command("split")
@settings_command(Flags(settings_of(SplitSettings)))
def split(source: Source, **given: Any) -> None:
    """Write train and held-out benchmark files with no exact or near-duplicate leakage between them."""
    from quantgrid.data import write_records
    from quantgrid.data.split import find_leakage, split_examples_report

    s = settings(SplitSettings, "split", given)
    train_out, bench_out, n, threshold = s.train_out, s.bench_out, s.n, s.threshold
    stem = source.split(":", 1)[1] if source.startswith("builtin:") else str(Path(source).with_suffix(""))
    train_out = train_out or Path(f"{stem}.train.jsonl")
    bench_out = bench_out or Path(f"{stem}.benchmark.jsonl")
    if train_out.resolve() == bench_out.resolve():
        raise ConfigError("--train-out and --bench-out are the same file", hint="give two different paths")
    _not_input(train_out, source)
    _not_input(bench_out, source)
    report = _load(source, s.fmt, s.lenient)
    result = split_examples_report(report.examples, s.benchmark_size, s.seed, n=n, threshold=threshold)
    leak = find_leakage(result.train, result.bench, n=n, threshold=threshold)
    fmt_out = _out_format(report)
    write_records(train_out, result.train, fmt_out)
    write_records(bench_out, result.bench, fmt_out)
    console.print(f"train: {len(result.train)} examples -> [bold]{escape(str(train_out))}[/]", highlight=False,
                  soft_wrap=True)
    console.print(f"benchmark: {len(result.bench)} examples -> [bold]{escape(str(bench_out))}[/]", highlight=False,
                  soft_wrap=True)
    if result.dropped:
        console.print(f"[yellow]dropped {result.dropped} near-duplicate(s) of benchmark items[/] "
                      "(they would leak on either side)", highlight=False, soft_wrap=True)
    console.print(f"leakage check ({n}-grams, threshold {threshold:g}): "
                  f"{'[green]clean[/]' if leak.clean else f'[red]{len(leak.overlaps)} overlaps[/]'}")


@data_app.command("leakage")
@settings_command(Flags(settings_of(LeakageSettings)))
def leakage(
    train: Annotated[str, typer.Argument(help="Training set: " + SOURCE_HELP)],
    bench: Annotated[str, typer.Argument(help="Benchmark set: " + SOURCE_HELP)],
    **given: Any,
) -> None:
    """Report benchmark items that appear in the training set, exactly or as near-duplicates. Exit 1 if any."""
    from quantgrid.data import load_examples
    from quantgrid.data.split import find_leakage

    s = settings(LeakageSettings, "leakage", given)
    n, threshold, show, as_json, fmt = s.n, s.threshold, s.show, s.as_json, s.fmt
    t, b = load_examples(train, format=fmt), load_examples(bench, format=fmt)
    report = find_leakage(t, b, n=n, threshold=threshold)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(f"{report.n_bench} benchmark items vs {report.n_train} train items ({n}-grams, threshold "
                      f"{threshold:g}): {len(report.exact)} exact, {len(report.near)} near", highlight=False, soft_wrap=True)
        if report.overlaps and show:
            table = Table("bench", "train", "kind", "overlap", "benchmark item")
            for o in report.overlaps[:show]:
                ex = b[o.bench_index]
                table.add_row(str(ex.meta.get("line", o.bench_index)), str(t[o.train_index].meta.get("line", o.train_index)),
                              o.kind, f"{o.score:.0%}", escape((ex.prompt or ex.completion)[:70]))
            console.print(table)
        console.print("[green]no leakage[/]" if report.clean else
                      f"[red]{len(report.leaked_bench)} of {report.n_bench} benchmark items leak[/]")
    if not report.clean:
        raise typer.Exit(1)


def _list_topics(value: bool) -> None:
    if not value:
        return
    from quantgrid.data import finance

    for t in finance.TOPICS:
        typer.echo(t)
    raise typer.Exit()


@data_app.command("finance")
@settings_command(Flags(settings_of(FinanceSettings)))
def finance_cmd(
    # An action, not a setting: it prints and exits before the settings are read.
    list_topics: bool = typer.Option(False, "--list-topics", is_eager=True, callback=_list_topics,
                                     help="Print the topics and exit."),
    **given: Any,
) -> None:
    """Generate finance Q&A with computed answers (P/E, NPV, IRR, bonds, VaR, options, ...), reproducibly."""
    from quantgrid.data import finance
    from quantgrid.data.sets import render_jsonl

    s = settings(FinanceSettings, "finance", given)
    n, seed, topics, concepts, out = s.n, s.seed, s.topics, s.concepts, s.out
    chosen = [t.strip() for t in topics.split(",") if t.strip()] if topics else None
    examples = finance.generate(n, seed=seed, topics=chosen)
    if concepts:
        examples += [e for e in finance.concepts() if not chosen or e.meta.get("topic") in chosen]
    text = render_jsonl(examples)
    if out is None:
        typer.echo(text, nl=False)
        return
    from quantgrid.utils import atomic_write_text

    atomic_write_text(out, text)
    console.print(f"{len(examples)} examples written to [bold]{escape(str(out))}[/] (seed {seed})", highlight=False,
                  soft_wrap=True)
    from quantgrid.data.provenance import record_generated

    if (log := record_generated(out, n=len(examples), seed=seed, topics=chosen or finance.TOPICS, concepts=concepts)):
        console.print(f"provenance recorded in {log}", highlight=False, markup=False)


@data_app.command("list")
def list_sets() -> None:
    """Show the built-in datasets (usable as builtin:NAME) and the file formats quantgrid reads."""
    from quantgrid.data import builtin_sets, load_examples

    table = Table("name", "examples", "description", title="built-in datasets", title_justify="left")
    for name, desc in builtin_sets().items():
        try:
            count = str(len(load_examples(f"builtin:{name}")))
        except (DataError, OSError):
            count = "unavailable"
        table.add_row(f"builtin:{name}", count, desc)
    console.print(table)
    formats = Table("--format", "schema", title="dataset formats (JSON array or JSONL)", title_justify="left")
    for f in _formats().values():
        formats.add_row(f.name, f.description)
    console.print(formats)


@data_app.command("from-feedback")
@settings_command(Flags(settings_of(FromFeedbackSettings)))
def from_feedback(
    store: Annotated[Path, typer.Argument(help="The --feedback-store file of `quantgrid serve`.")],
    **given: Any,
) -> None:
    """Export the rated exchanges of `quantgrid serve --feedback-store` as a training set."""
    from quantgrid.serve.feedback import write_training_set

    s = settings(FromFeedbackSettings, "from-feedback", given)
    out, rating = s.out, s.rating
    n, skipped = write_training_set(store, out, rating)
    console.print(f"{n} exchanges rated {rating!r} written to {out}"
                  + (f" ({skipped} unreadable lines skipped)" if skipped else ""), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data", help="Check, normalize and split datasets; built-in finance data.")
