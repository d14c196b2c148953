"""CLI: `quantgrid data check|normalize|split|leakage|finance|list`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from quantgrid.cli._common import console, err_console
from quantgrid.errors import ConfigError, DataError

data_app = typer.Typer(help="Check, normalize and split datasets; built-in finance data.", no_args_is_help=True)

SOURCE_HELP = "A .jsonl or JSON-array file, or builtin:NAME (see `quantgrid data list`)."
FORMAT_HELP = "Dataset schema; detected from the first record when left out (`quantgrid data list` shows them)."
LENIENT_HELP = "Skip bad records (and list them) instead of stopping at the first."


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
def check(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer (model dir or HF id) for lengths in tokens."),
    recipe: Path = typer.Option(None, "--recipe", help="Recipe YAML: its max_seq_length and prompt template."),
    max_seq_length: int = typer.Option(None, "--max-seq-length", min=16,
                                       help="Warn about examples longer than this (default: the recipe's, 1024)."),
    template: str = typer.Option(None, "--template", help="Prompt template for lengths (default: the recipe's, qa)."),
    fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
    lenient: bool = typer.Option(False, "--lenient", help=LENIENT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Count, detected format, length statistics and warnings (duplicates, truncation, < 500 examples)."""
    from quantgrid.data.check import check_examples
    from quantgrid.recipe import Recipe

    rec = Recipe.load(recipe) if recipe else Recipe()
    report = _load(source, fmt, lenient)  # before the (slower) tokenizer: a bad file fails fast
    tok = _tokenizer(tokenizer) if tokenizer else None
    result = check_examples(report, tokenizer=tok, template=template or rec.prompt_template,
                            max_seq_length=max_seq_length or rec.training.max_seq_length,
                            system_prompt=rec.system_prompt)
    if as_json:
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
def normalize(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (default: FILE.normalized.jsonl)."),
    changes: Path = typer.Option(None, "--changes", help="Where to record every change (default: FILE.changes.jsonl)."),
    kinds: str = typer.Option(None, "--kinds", help="Comma-separated placeholders to apply (default: all but NUMBER): "
                              "TIMESTAMP,DATE,CHANGE,PERCENT,AMOUNT,PRICE,VOLUME,NUMBER."),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="Drop examples that became exact duplicates."),
    fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
    lenient: bool = typer.Option(False, "--lenient", help=LENIENT_HELP),
) -> None:
    """Replace prices, changes, percentages, dates and timestamps with <PRICE>, <CHANGE>, ... placeholders."""
    from quantgrid.data import write_records
    from quantgrid.data.normalize import DEFAULT_KINDS, normalize_examples
    from quantgrid.utils import atomic_write_text

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
def split(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    benchmark_size: int = typer.Option(50, "--benchmark-size", min=1, help="Items to hold out as the benchmark."),
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed gives the same split."),
    train_out: Path = typer.Option(None, "--train-out", help="Train file (default: FILE.train.jsonl)."),
    bench_out: Path = typer.Option(None, "--bench-out", help="Benchmark file (default: FILE.benchmark.jsonl)."),
    n: int = typer.Option(8, "--n", min=1, help="n-gram size for near-duplicate detection."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.01, max=1.0,
                                    help="Share of a benchmark item's n-grams in one train item that counts as a leak."),
    fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
    lenient: bool = typer.Option(False, "--lenient", help=LENIENT_HELP),
) -> None:
    """Write train and held-out benchmark files with no exact or near-duplicate leakage between them."""
    from quantgrid.data import write_records
    from quantgrid.data.split import find_leakage, split_examples_report

    stem = source.split(":", 1)[1] if source.startswith("builtin:") else str(Path(source).with_suffix(""))
    train_out = train_out or Path(f"{stem}.train.jsonl")
    bench_out = bench_out or Path(f"{stem}.benchmark.jsonl")
    if train_out.resolve() == bench_out.resolve():
        raise ConfigError("--train-out and --bench-out are the same file", hint="give two different paths")
    _not_input(train_out, source)
    _not_input(bench_out, source)
    report = _load(source, fmt, lenient)
    result = split_examples_report(report.examples, benchmark_size, seed, n=n, threshold=threshold)
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
def leakage(
    train: str = typer.Argument(..., help="Training set: " + SOURCE_HELP),
    bench: str = typer.Argument(..., help="Benchmark set: " + SOURCE_HELP),
    n: int = typer.Option(8, "--n", min=1, help="n-gram size for near-duplicate detection."),
    threshold: float = typer.Option(0.5, "--threshold", min=0.01, max=1.0,
                                    help="Share of a benchmark item's n-grams in one train item that counts as a leak."),
    show: int = typer.Option(10, "--show", min=0, help="How many overlaps to print."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    fmt: str = typer.Option(None, "--format", help=FORMAT_HELP),
) -> None:
    """Report benchmark items that appear in the training set, exactly or as near-duplicates. Exit 1 if any."""
    from quantgrid.data import load_examples
    from quantgrid.data.split import find_leakage

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


@data_app.command("finance")
def finance_cmd(
    n: int = typer.Option(1000, "--n", min=0, help="Number of computed-answer questions."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same items."),
    topics: str = typer.Option(None, "--topics", help="Comma-separated topics (default: all). See --list-topics."),
    concepts: bool = typer.Option(False, "--concepts", help="Append the hand-written concept questions."),
    out: Path = typer.Option(None, "--out", "-o", help="Output .jsonl (default: print to stdout)."),
    list_topics: bool = typer.Option(False, "--list-topics", help="Print the topics and exit."),
) -> None:
    """Generate finance Q&A with computed answers (P/E, NPV, IRR, bonds, VaR, options, ...), reproducibly."""
    from quantgrid.data import finance
    from quantgrid.data.sets import render_jsonl

    if list_topics:
        for t in finance.TOPICS:
            typer.echo(t)
        return
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
def from_feedback(
    store: Path = typer.Argument(..., help="The --feedback-store file of `quantgrid serve`."),
    out: Path = typer.Option(..., "--out", help="Training set to write (JSONL, messages format)."),
    rating: str = typer.Option("up", "--rating", help="Keep exchanges whose latest rating is this: up or down."),
) -> None:
    """Export the rated exchanges of `quantgrid serve --feedback-store` as a training set."""
    from quantgrid.serve.feedback import write_training_set

    n, skipped = write_training_set(store, out, rating)
    console.print(f"{n} exchanges rated {rating!r} written to {out}"
                  + (f" ({skipped} unreadable lines skipped)" if skipped else ""), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data", help="Check, normalize and split datasets; built-in finance data.")
