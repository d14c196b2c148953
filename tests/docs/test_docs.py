"""The documentation does what it says.

* Every guide's **Quickstart** runs as written: its ```bash blocks are run in order, each
  with ``bash -e -o pipefail``, in a fresh temporary directory, offline (``HF_HUB_OFFLINE=1``),
  with this venv's ``quantgrid`` first on PATH and a private ``QUANTGRID_CONFIG_DIR``. Each
  must exit 0 and leave no process running (a quickstart that starts a server stops it).
  ``PORT`` is set to a free port (and ``PORT + 1`` is free too), so the blocks' servers do
  not collide with anything else on the machine; the docs default it with ``${PORT:-8000}``.
* Every ``quantgrid ...`` command line anywhere in the docs and the README (shell blocks and
  inline code) names a real command, and every ``--flag`` on it is one that command takes.
* Every relative link in the docs and the README points to an existing file (and heading).

The quickstarts are independent of each other, so they run two at a time: on a 2-core
machine that halves the wall time, and each guide is still its own test case.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GUIDES = ("contributor-guide.md", "hub-operator-guide.md", "serving-guide.md", "export-guide.md", "architecture.md",
          "alpha-language.md")
ALL_MARKDOWN = sorted([ROOT / "README.md", *DOCS.glob("*.md")])
SHELL_LANGS = {"bash", "sh", "shell", "console"}
BLOCK_TIMEOUT_S = 420
# Submission order for the two-at-a-time run: longest first keeps the two lanes balanced.
SLOWEST_FIRST = ("hub-operator-guide.md", "export-guide.md", "contributor-guide.md", "serving-guide.md",
                 "architecture.md", "alpha-language.md")
# What each quickstart says it produces (globs relative to its directory): a run that exits 0
# without these did not do what the guide claims.
PRODUCES = {
    "contributor-guide.md": ["adapters/corp-finance/PROPOSAL.md", "adapters/corp-finance/training/dataset.jsonl",
                             "adapters/corp-finance/eval/benchmark.jsonl", "adapters/corp-finance/adapter_model.safetensors",
                             "adapters/corp-finance/eval/results.json", "adapters/corp-finance/eval/REPORT.md",
                             "adapters/corp-finance/eval/base_REPORT.md", "adapters/corp-finance/eval/ood_REPORT.md",
                             "review.jsonl", "dist/quantgrid_submission_*.zip", "registry.yaml"],
    "hub-operator-guide.md": ["quantgrid_submission_*.zip", "hub/releases/20*/adapter_model.safetensors",
                              "hub/releases/20*/release.json", "hub-backup.db", ".quantgrid-config/credentials.json"],
    "serving-guide.md": ["adapter/adapter_model.safetensors"],
    "export-guide.md": ["gguf/base-f16.gguf", "gguf/adapter.gguf", "ollama/Modelfile",
                        "ollama/base.gguf", "ollama/adapter.gguf", "merged/config.json", "merged/model.safetensors"],
    "architecture.md": [],
    "alpha-language.md": ["prices.csv"],
}

# ---------------------------------------------------------------- markdown parsing


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    section: tuple[str, ...]  # the headings above it, outermost first


def parse_markdown(text: str) -> tuple[list[Block], list[tuple[int, str]]]:
    """(fenced code blocks, headings as (level, title)) of a Markdown document."""
    blocks: list[Block] = []
    headings: list[tuple[int, str]] = []
    stack: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", line)
        if fence:
            marker, lang, start = fence.group(2), fence.group(3).lower(), i
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            blocks.append(Block(lang, "\n".join(body) + "\n", start + 1, tuple(t for _, t in stack)))
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2)
            headings.append((level, title))
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, title)]
        i += 1
    return blocks, headings


def quickstart_blocks(path: Path) -> list[Block]:
    blocks, _ = parse_markdown(path.read_text(encoding="utf-8"))
    return [b for b in blocks if b.lang == "bash" and any(s.lower().startswith("quickstart") for s in b.section)]


# ---------------------------------------------------------------- running the quickstarts


def _free_port_pair() -> int:
    """A port p with p and p + 1 both free right now (the serving guide starts two servers)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports")


def _group_alive(pgid: int) -> list[str]:
    """Command lines of the live (not zombie) processes in process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
        rest = text.rsplit(")", 1)[-1].split()
        if len(rest) > 2 and int(rest[2]) == pgid and rest[0] != "Z":
            try:
                alive.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
            except OSError:
                alive.append(stat.parent.name)
    return alive


def _kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)


def run_quickstart(guide: str, workdir: Path) -> str | None:
    """Run the guide's quickstart blocks in ``workdir``; None on success, else what went wrong."""
    path = DOCS / guide
    blocks = quickstart_blocks(path)
    if not blocks:
        return f"{guide} has no ```bash block under a Quickstart heading"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("QUANTGRID_") and k not in ("LOCAL_PYTORCH_ENABLED", "PORT")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
        QUANTGRID_CONFIG_DIR=str(workdir / ".quantgrid-config"), PORT=str(_free_port_pair()),
        COLUMNS="120", TOKENIZERS_PARALLELISM="false",
        # Quickstarts run two at a time, each with a server and clients: one torch thread per
        # process keeps a small machine from thrashing.
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
    )
    transcript = []
    for n, block in enumerate(blocks, 1):
        script = workdir / f".quickstart-{n}.sh"
        script.write_text(block.code)
        proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", str(script)], cwd=workdir, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            out, _ = proc.communicate()
            return f"{guide} line {block.line}: timed out after {BLOCK_TIMEOUT_S} s\n{out[-6000:]}"
        transcript.append(out)
        # A server the block started and stopped may take a moment to exit.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
        left = _group_alive(proc.pid)
        _kill_group(proc.pid)
        if proc.returncode != 0:
            return f"{guide} line {block.line}: exit code {proc.returncode}\n{block.code}\n--- output ---\n{out[-6000:]}"
        if left:
            return f"{guide} line {block.line}: left processes running: {left}"
    missing = [g for g in PRODUCES[guide] if not any(workdir.glob(g))]
    if missing:
        return f"{guide}: the quickstart exited 0 but did not produce {missing}\n" + "".join(transcript)[-6000:]
    return None


@pytest.fixture(scope="module")
def quickstart_runs(request, tmp_path_factory) -> dict[str, Future]:
    """Start the selected guides' quickstarts, two at a time; each test waits for its own."""
    selected = [item.callspec.params["guide"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_quickstart_runs" and hasattr(item, "callspec")]
    pool = ThreadPoolExecutor(max_workers=2)
    futures = {g: pool.submit(run_quickstart, g, tmp_path_factory.mktemp(g.removesuffix(".md")))
               for g in SLOWEST_FIRST if g in selected}
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.parametrize("guide", GUIDES)
def test_quickstart_runs(guide: str, quickstart_runs: dict[str, Future]) -> None:
    error = quickstart_runs[guide].result()
    assert error is None, error


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_starts_with_a_quickstart(guide: str) -> None:
    blocks, headings = parse_markdown((DOCS / guide).read_text(encoding="utf-8"))
    assert headings and headings[0][0] == 1, f"{guide} must open with a '# Title'"
    assert len(headings) > 1 and headings[1][1].lower().startswith("quickstart"), \
        f"{guide}: the first section must be the Quickstart, got {headings[1:2]}"
    assert quickstart_blocks(DOCS / guide), f"{guide}: the Quickstart has no ```bash block"


# ---------------------------------------------------------------- command names and flags

# `quantgrid` in command position: at the start, or after ; & | ( ! ` then do, and after any
# VAR=value assignments; with an optional path (.venv/bin/quantgrid). `--storage /srv/quantgrid`
# is an argument, not a command.
_START = re.compile(r"(?:^|[;&|(`!]|\bthen\b|\bdo\b)\s*(?:\w+=\S*\s+)*((?:[\w.~-]*/)*quantgrid)(?=\s|$)")


def _segment(text: str, start: int) -> str:
    """The shell words of one command from ``start``: up to an unquoted ; & | ) < > or comment."""
    quote, i = None, start
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"':
                i += 1
        elif c in "'\"":
            quote = c
        elif c in ";&|)<>\n`" or (c == "#" and text[i - 1].isspace()):
            break
        i += 1
    return text[start:i]


def shell_commands(code: str) -> list[str]:
    """Every ``quantgrid ...`` command in shell code: continuations joined, heredoc bodies skipped."""
    lines, out, heredoc = code.replace("\\\n", " ").splitlines(), [], None
    for line in lines:
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        m = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
        if m:
            heredoc = m.group(2)
        stripped = line.lstrip()
        if stripped.startswith("#"):
            continue
        for s in _START.finditer(line):
            out.append(_segment(line, s.start(1)))
    return out


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) for every quantgrid command in the docs and the README."""
    found = []
    for path in ALL_MARKDOWN:
        text = path.read_text(encoding="utf-8")
        blocks, _ = parse_markdown(text)
        for b in blocks:
            if b.lang in SHELL_LANGS:
                found += [(f"{path.name}:{b.line}", c) for c in shell_commands(b.code)]
        prose = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\1\2", "", text, flags=re.S | re.M)
        for span in re.findall(r"`([^`\n]+)`", prose):
            if re.match(r"(?:[\w.~-]*/)*quantgrid(\s|$)", span.strip()):
                found.append((f"{path.name} (inline)", span.strip()))
    return found


def _cli_root():
    from typer.main import get_command

    from quantgrid.cli import app

    return get_command(app)


def check_command(root, line: str) -> str | None:
    """None if ``line`` names a real command with real flags, else the problem."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        return f"cannot parse as shell words ({e})"
    cmd, path, i = root, ["quantgrid"], 1
    while i < len(words) and hasattr(cmd, "list_commands") and not words[i].startswith("-"):
        sub = cmd.get_command(cmd.context_class(cmd), words[i])
        if sub is None:
            return f"`{' '.join(path)}` has no command {words[i]!r}"
        cmd, path, i = sub, path + [words[i]], i + 1
    flags = {"--help", "-h"}
    for p in cmd.params:
        flags.update(getattr(p, "opts", ()))
        flags.update(getattr(p, "secondary_opts", ()))
    for w in words[i:]:
        if w == "--":
            break
        if w.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", w) and w.split("=", 1)[0] not in flags:
            return f"`{' '.join(path)}` takes no option {w.split('=', 1)[0]!r}"
    return None


def test_extractor_finds_nested_and_continued_commands() -> None:
    code = ('TOKEN=$(quantgrid hub user add alice --config hub.yaml)\n'
            'quantgrid login --token "$(quantgrid hub user add bob)" # comment\n'
            'quantgrid train --dataset d.jsonl \\\n  --output out && .venv/bin/quantgrid demo --quick\n'
            "python - <<'EOF'\nquantgrid not-a-command\nEOF\n"
            'pip install "quantgrid[ml]"\n'
            'LOCAL_PYTORCH_ENABLED=false quantgrid serve --storage /srv/quantgrid | tee log\n')
    assert shell_commands(code) == [
        "quantgrid hub user add alice --config hub.yaml",
        'quantgrid login --token "$(quantgrid hub user add bob)" ',
        "quantgrid hub user add bob",
        "quantgrid train --dataset d.jsonl    --output out ",
        ".venv/bin/quantgrid demo --quick",
        "quantgrid serve --storage /srv/quantgrid ",
    ]
    root = _cli_root()
    assert check_command(root, "quantgrid train --dataset x --output y") is None
    assert check_command(root, "quantgrid hub user add alice --admin") is None
    assert "no command 'trian'" in check_command(root, "quantgrid trian --dataset x")
    assert "no option '--epoch'" in check_command(root, "quantgrid train --epoch 3")
    assert "no command 'frobnicate'" in check_command(root, "quantgrid hub frobnicate")


def test_every_documented_command_exists() -> None:
    root = _cli_root()
    commands = documented_commands()
    assert len(commands) > 50, f"found only {len(commands)} quantgrid commands in the docs: is the extractor broken?"
    problems = [f"{where}: {line.strip()}\n    -> {err}" for where, line in commands
                if (err := check_command(root, line))]
    assert not problems, "commands in the docs that the CLI does not have:\n" + "\n".join(problems)


# ---------------------------------------------------------------- links


def _slug(title: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to hyphens."""
    title = re.sub(r"`|\*|_(?=\w)|(?<=\w)_", "", title.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title))


def test_every_link_points_to_an_existing_file() -> None:
    problems = []
    for path in ALL_MARKDOWN:
        text = path.read_text(encoding="utf-8")
        prose = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\1\2", "", text, flags=re.S | re.M)
        for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{path.name}: link to missing {target}")
            elif anchor and dest.suffix == ".md":
                _, headings = parse_markdown(dest.read_text(encoding="utf-8"))
                if anchor not in {_slug(t) for _, t in headings}:
                    problems.append(f"{path.name}: link to missing heading {target}")
    assert not problems, "\n".join(problems)


def test_readme_links_every_guide() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [g for g in GUIDES if f"docs/{g}" not in readme]
    assert not missing, f"README.md does not link {missing}"
