"""An adapter's routing profile: the words its training questions share, and how often.

``quantgrid train`` records it in the manifest (``routing``); ``quantgrid serve`` sends an
``auto`` question to the adapter whose profile explains the question's words best
(``quantgrid.serve.router``). It is a document-frequency table over the *questions* only
(never answers or contexts), and it keeps a word only if at least ``min_count`` questions
and ``min_share`` of them contain it, so no word particular to one or a few examples
(a name, an account, an internal code) is ever written. Torch-free.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

PROFILE_METHOD = "question-words"
PROFILE_VERSION = 1
_WORD = re.compile(r"[a-z][a-z0-9'/-]*[a-z0-9]|[a-z]")
STOPWORDS = frozenset("""
a about above after again all also am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers him his how
i if in into is it its itself just me more most my no nor not now of off on once only or other our out over own
per same she should so some such than that the their theirs them then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your yours
give given find compute calculate show using use tell explain please assume
""".split())


def question_words(text: str) -> set[str]:
    """The distinct content words of a question, lower-cased (numbers and stopwords dropped)."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1}


def question_profile(questions: Iterable[str], *, max_terms: int = 256, min_count: int = 5,
                     min_share: float = 0.01) -> dict[str, Any]:
    """The manifest's ``routing`` entry for a training set's questions."""
    counts: Counter[str] = Counter()
    n = 0
    for q in questions:
        if q:
            n += 1
            counts.update(question_words(q))
    floor = max(min_count, min_share * n)
    kept = [(w, c) for w, c in counts.items() if c >= floor]
    kept.sort(key=lambda wc: (-wc[1], wc[0]))
    terms = {w: round(c / n, 4) for w, c in kept[:max_terms]}
    return {"method": PROFILE_METHOD, "version": PROFILE_VERSION, "n_questions": n, "terms": terms}


def profile_terms(profile: Any) -> dict[str, float] | None:
    """The term table of a manifest ``routing`` entry, or None if it is missing or not ours."""
    if not isinstance(profile, dict) or profile.get("method") != PROFILE_METHOD:
        return None
    terms = profile.get("terms")
    if not isinstance(terms, dict):
        return None
    out = {}
    for w, v in terms.items():
        if isinstance(w, str) and isinstance(v, (int, float)) and 0 < v <= 1:
            out[w] = float(v)
    return out
