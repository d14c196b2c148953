"""Live values for the placeholders adapters are trained to write.

Adapters trained on ``context_required`` questions answer with ``<PRICE>``, ``<CHANGE>``
and ``<TIMESTAMP>`` instead of numbers they cannot know. With a context provider
configured (``--context-provider``), the server fills them at answer time with a quote for
the question's ticker, and ends the answer with the provider it used; when no value can
be had it says so in place of the placeholder, and never lets a placeholder or an
invented number through. Providers:

* ``file:PATH``: a local JSON object ``{"AAPL": {"price": 189.5, "change": -1.2,
  "timestamp": "2026-12-01T16:00:00Z"}, ...}`` or a CSV with ``symbol,price,change,timestamp``
  columns; re-read when the file changes.
* ``http://HOST/...{symbol}...``: a quote endpoint answering that same JSON object for one
  symbol (``{"price", "change", "timestamp"}``); 404 means "no quote".
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from quantgrid.errors import ConfigError
from quantgrid.serve.events import Delta, Done, Event

PLACEHOLDERS = {"<PRICE>": "price", "<CHANGE>": "change", "<TIMESTAMP>": "timestamp"}
_LONGEST = max(len(p) for p in PLACEHOLDERS)
_TICKER = re.compile(r"\$([A-Za-z]{1,5})\b|\b([A-Z]{1,5})\b")
_NOT_TICKERS = frozenset("A I AN AND THE OF IN ON TO FOR IS IT AT BY OR AS BE US USD EUR GDP CEO ETF EPS PE P E "
                         "IPO YTD API JSON".split())
HTTP_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Quote:
    symbol: str
    price: float | None
    change: float | None
    timestamp: str | None
    source: str

    def value(self, field: str) -> str | None:
        v = getattr(self, field)
        if v is None:
            return None
        if field == "change" and isinstance(v, (int, float)):
            return f"{v:+g}"
        return f"{v:g}" if isinstance(v, float) else str(v)


def tickers(question: str) -> list[str]:
    """Candidate ticker symbols in a question, most explicit first (``$AAPL`` before ``AAPL``)."""
    dollar = [m.group(1).upper() for m in _TICKER.finditer(question) if m.group(1)]
    bare = [m.group(2) for m in _TICKER.finditer(question) if m.group(2) and m.group(2) not in _NOT_TICKERS]
    return list(dict.fromkeys(dollar + bare))


def _num(v) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


class FileProvider:
    def __init__(self, path: str):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ConfigError(f"context provider file {self.path} does not exist",
                              hint="give a JSON or CSV file of quotes: --context-provider file:PATH")
        self.name = f"file {self.path.name}"
        self._mtime: int | None = None
        self._quotes: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        mtime = self.path.stat().st_mtime_ns
        if mtime != self._mtime:
            text = self.path.read_text(encoding="utf-8")
            if self.path.suffix.lower() == ".csv":
                rows = {r["symbol"].upper(): r for r in csv.DictReader(text.splitlines()) if r.get("symbol")}
            else:
                data = json.loads(text)
                rows = {str(k).upper(): v for k, v in data.items() if isinstance(v, dict)}
            self._quotes, self._mtime = rows, mtime
        return self._quotes

    async def quote(self, symbol: str) -> Quote | None:
        try:
            row = self._load().get(symbol.upper())
        except (OSError, ValueError, KeyError):
            return None  # a file half-written by its updater: no value this time
        if row is None:
            return None
        return Quote(symbol.upper(), _num(row.get("price")), _num(row.get("change")),
                     row.get("timestamp") or None, self.name)


class HttpProvider:
    def __init__(self, url: str, client: httpx.AsyncClient | None = None):
        if "{symbol}" not in url:
            raise ConfigError(f"context provider URL {url!r} has no {{symbol}}",
                              hint="e.g. --context-provider 'http://127.0.0.1:9000/quote?symbol={symbol}'")
        self.url = url
        self.name = urlsplit(url).netloc or url
        self.client = client or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)

    async def quote(self, symbol: str) -> Quote | None:
        try:
            r = await self.client.get(self.url.replace("{symbol}", symbol))
            if r.status_code != 200:
                return None
            row = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(row, dict):
            return None
        return Quote(symbol.upper(), _num(row.get("price")), _num(row.get("change")),
                     row.get("timestamp") or None, self.name)


def make_provider(spec: str) -> FileProvider | HttpProvider:
    if spec.startswith("file:"):
        return FileProvider(spec[5:])
    if spec.startswith(("http://", "https://")):
        return HttpProvider(spec)
    raise ConfigError(f"--context-provider {spec!r} is neither file:PATH nor an http(s) URL",
                      hint="e.g. --context-provider file:./quotes.json")


class ContextFiller:
    def __init__(self, provider: FileProvider | HttpProvider):
        self.provider = provider

    async def find_quote(self, question: str) -> Quote | None:
        for symbol in tickers(question)[:3]:
            q = await self.provider.quote(symbol)
            if q is not None:
                return q
        return None

    def wrap(self, events: AsyncIterator[Event], question: str) -> AsyncIterator[Event]:
        return _fill(self, events, question)


def _replace(text: str, quote: Quote | None, used: dict[str, bool]) -> str:
    for ph, field in PLACEHOLDERS.items():
        if ph in text:
            value = quote.value(field) if quote is not None else None
            used["filled" if value is not None else "missing"] = True
            text = text.replace(ph, value if value is not None else f"[{field} not available]")
    return text


def _hold(text: str) -> int:
    """Where a possible placeholder starts at the end of ``text`` (held back until complete)."""
    i = text.rfind("<")
    if i >= 0 and len(text) - i < _LONGEST and ">" not in text[i:] and any(p.startswith(text[i:])
                                                                          for p in PLACEHOLDERS):
        return i
    return len(text)


async def _fill(filler: ContextFiller, events: AsyncIterator[Event], question: str) -> AsyncIterator[Event]:
    pending, quote, looked = "", None, False
    used: dict[str, bool] = {}
    try:
        async for ev in events:
            if isinstance(ev, Delta):
                pending += ev.text
                if not looked and any(p in pending for p in PLACEHOLDERS):
                    quote, looked = await filler.find_quote(question), True
                cut = _hold(pending)
                out, pending = _replace(pending[:cut], quote, used), pending[cut:]
                if out or ev.logprobs:
                    yield Delta(out, ev.logprobs)
                continue
            if isinstance(ev, Done):
                tail = _replace(pending, quote, used) + _citation(filler, quote, used)
                pending = ""
                if tail:
                    yield Delta(tail)
            yield ev
    finally:
        await events.aclose()


def _citation(filler: ContextFiller, quote: Quote | None, used: dict[str, bool]) -> str:
    if used.get("filled") and quote is not None:
        when = f" as of {quote.timestamp}" if quote.timestamp else ""
        return f"\n\n(Source: {quote.source}, {quote.symbol}{when}.)"
    if used.get("missing"):
        return f"\n\n(No live value was available from {filler.provider.name} for this question.)"
    return ""
