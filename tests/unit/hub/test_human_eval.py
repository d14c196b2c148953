"""Human evaluation: the API (maintainers only), the blind grading page and its form rules,
the aggregates the leaderboard and release pages show, and the maths behind them."""

from __future__ import annotations

import itertools
import re

import pytest

from quantgrid.hub.server import human_eval as he
from quantgrid.hub.server.models import HumanEvalGrade, Release, utcnow

from .test_web import _accept, _push, _sign_in

CAND = "ALPHA-ANSWER: the margin is 17.03%; watch the leverage risk."
BASE = "OMEGA-ANSWER: margin maybe 20%."


def _grade(c: dict, b: dict) -> dict:
    return {"candidate": c, "base": b}


def _g(clarity, correctness, numbers, strategy, flag) -> dict:
    return {"clarity": clarity, "correctness": correctness, "number_accuracy": numbers,
            "strategy_quality": strategy, "risk_flag": flag}


def _pairs(n: int) -> dict:
    return {"benchmark": "finance-dev", "pairs": [
        {"question_id": f"q{i}", "question": f"What is the operating margin of firm {i}?",
         "base_answer": f"{BASE} #{i}", "candidate_answer": f"{CAND} #{i}"} for i in range(n)]}


def _main(html: str) -> str:
    return html[html.index("<main"): html.index("</main>")]


@pytest.fixture
def adapter(client, app, users) -> int:
    sub = _push(client, users["alice"], b"PK\x03\x04alice-he")
    _accept(app, sub)
    return sub


# ------------------------------------------------------------------ aggregation maths


def test_aggregate_means_win_rates_ties_and_flags():
    grades = [_grade(_g(5, 4, 3, 2, True), _g(3, 4, 5, 1, False)),   # clarity win, correctness tie, numbers loss
              _grade(_g(2, 2, 2, 2, False), _g(4, 4, 4, 4, True))]   # every dimension lost
    got = he.aggregate(grades)
    d = got["dimensions"]
    assert got["grades"] == 2
    assert d["clarity"] == {"candidate": 3.5, "base": 3.5, "win_rate": 0.5}
    assert d["correctness"] == {"candidate": 3.0, "base": 4.0, "win_rate": 0.25}  # a tie counts one half
    assert d["number_accuracy"]["win_rate"] == 0.0
    assert d["strategy_quality"] == {"candidate": 2.0, "base": 2.5, "win_rate": 0.5}
    assert d["risk_flag"] == {"candidate": 0.5, "base": 0.5}
    # overall compares sums: 14 vs 13 (win), 8 vs 16 (loss)
    assert d["overall"] == {"candidate": 11.0, "base": 14.5, "win_rate": 0.5} and got["win_rate"] == 0.5
    assert he.aggregate([]) == {"grades": 0, "dimensions": {}}


def test_sample_is_public_reproducible_and_never_the_hidden_set():
    a, b = he.sample_questions("finance-dev", 5, seed=3), he.sample_questions("finance-dev", 5, seed=3)
    assert [q for q, _ in a] == [q for q, _ in b] and len({q for q, _ in a}) == 5
    assert [q for q, _ in a] != [q for q, _ in he.sample_questions("finance-dev", 5, seed=4)]
    assert len(he.sample_questions("alpha-bench", 3)) == 3
    with pytest.raises(Exception, match="not a public benchmark"):
        he.sample_questions("hidden", 3)


# ------------------------------------------------------------------ API


def test_only_maintainers_store_or_queue_pairs(client, users, adapter):
    url = f"/v1/human-eval/adapter/{adapter}"
    assert client.post(f"{url}/pairs", json=_pairs(2)).status_code == 401
    r = client.post(f"{url}/pairs", json=_pairs(2), headers=users["bob"])
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.post(f"{url}/generate", json={"n": 2}, headers=users["alice"]).status_code == 403
    r = client.post(f"{url}/pairs", json=_pairs(2), headers=users["root"])
    assert r.status_code == 201 and r.json() == {"added": 2}
    assert client.post(f"{url}/pairs", json=_pairs(3), headers=users["root"]).json() == {"added": 1}  # q0, q1 kept
    assert client.post("/v1/human-eval/adapter/999/pairs", json=_pairs(1), headers=users["root"]).status_code == 404
    bad = {**_pairs(1), "benchmark": "hidden"}
    assert client.post(f"{url}/pairs", json=bad, headers=users["root"]).status_code == 400
    r = client.post(f"{url}/generate", json={"n": 2, "benchmark": "finance-dev"}, headers=users["root"])
    assert r.status_code == 202 and isinstance(r.json()["job_id"], int)
    # results are public aggregates; nothing graded yet
    assert client.get(url).json() == {"grades": 0, "dimensions": {}}


# ------------------------------------------------------------------ the grading page


def _store(app, adapter: int, n: int, sides) -> None:
    he.add_pairs(app.state.db, "adapter", str(adapter), "finance-dev",
                 [he.PairIn(**p) for p in _pairs(n)["pairs"]], rng=lambda: next(sides))


def _form(side_scores: dict[str, tuple], csrf: str) -> dict:
    data = {"csrf": csrf}
    for side, (c, k, n, s, flag) in side_scores.items():
        data.update({f"{side}_clarity": c, f"{side}_correctness": k, f"{side}_number_accuracy": n,
                     f"{side}_strategy_quality": s, f"{side}_risk_flag": flag})
    return data


def test_grading_page_is_for_maintainers_only(client, app, users, adapter):
    _store(app, adapter, 1, itertools.repeat(True))
    page = f"/human-eval/adapter/{adapter}"
    assert client.get(page, follow_redirects=False).headers["location"].startswith("/login")
    csrf = _sign_in(client, users["bob"])
    for path in ("/human-eval", page):
        r = client.get(path)
        assert r.status_code == 403 and "maintainers" in r.text and CAND not in r.text
    item = app.state.db
    with item.read() as s:
        item_id = s.query(he.HumanEvalItem.id).scalar()
    r = client.post(f"/human-eval/items/{item_id}/grade", data=_form({"a": (5, 5, 5, 5, "yes"),
                                                                      "b": (1, 1, 1, 1, "no")}, csrf))
    assert r.status_code == 403
    assert "Human evaluation" not in client.get("/").text  # no nav link for non-maintainers
    with app.state.db.read() as s:
        assert s.query(HumanEvalGrade).count() == 0


def test_page_is_blind_and_grades_map_back_to_base_and_candidate(client, app, users, adapter):
    _store(app, adapter, 2, iter([True, False]))  # q0: candidate shown first; q1: base first
    csrf = _sign_in(client, users["root"])
    assert f"/human-eval/adapter/{adapter}" in client.get("/human-eval").text
    page = client.get(f"/human-eval/adapter/{adapter}")
    main = _main(page.text)
    assert page.status_code == 200 and "0 of 2 pairs" in main
    assert main.index("Answer A") < main.index(CAND) < main.index("Answer B") < main.index(BASE)
    # nothing on the page says which answer is which
    for word in ("candidate", "base", "first"):
        assert word not in main.lower(), word
    assert "<script" not in page.text
    item0 = int(re.search(r"/human-eval/items/(\d+)/grade", main).group(1))
    # A (the candidate here) gets 5s and the risk flag; B (the base) 2s without it
    r = client.post(f"/human-eval/items/{item0}/grade",
                    data=_form({"a": (5, 5, 5, 5, "yes"), "b": (2, 2, 2, 2, "no")}, csrf), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/human-eval/adapter/{adapter}?notice=graded"
    main = _main(client.get(f"/human-eval/adapter/{adapter}").text)
    assert "1 of 2 pairs" in main
    assert main.index("Answer A") < main.index(BASE) < main.index("Answer B") < main.index(CAND)  # q1: base first
    item1 = int(re.search(r"/human-eval/items/(\d+)/grade", main).group(1))
    assert item1 != item0
    # A (the base now) gets 4s; B (the candidate) 3s
    client.post(f"/human-eval/items/{item1}/grade", data=_form({"a": (4, 4, 4, 4, "yes"), "b": (3, 3, 3, 3, "no")}, csrf))
    assert "Nothing left to grade" in client.get(f"/human-eval/adapter/{adapter}").text
    with app.state.db.read() as s:
        scores = {g.item_id: g.scores for g in s.query(HumanEvalGrade)}
    assert scores[item0]["candidate"]["clarity"] == 5 and scores[item0]["base"]["risk_flag"] is False
    assert scores[item1]["candidate"]["clarity"] == 3 and scores[item1]["base"]["clarity"] == 4
    got = client.get(f"/v1/human-eval/adapter/{adapter}").json()
    assert got["grades"] == 2 and got["pairs"] == 2 and got["win_rate"] == 0.5
    assert got["dimensions"]["clarity"] == {"candidate": 4.0, "base": 3.0, "win_rate": 0.5}
    assert got["dimensions"]["risk_flag"] == {"candidate": 0.5, "base": 0.5}
    # the leaderboard shows the adapter's registry name and version and its human-eval win rate
    board = client.get("/").text
    assert f"adapter-{adapter}</bdi> v1" in board and "50% (2 grades)" in board


def test_grade_form_needs_csrf_and_valid_scores(client, app, users, adapter):
    _store(app, adapter, 1, itertools.repeat(False))
    csrf = _sign_in(client, users["root"])
    with app.state.db.read() as s:
        item_id = s.query(he.HumanEvalItem.id).scalar()
    good = _form({"a": (5, 5, 5, 5, "yes"), "b": (1, 1, 1, 1, "no")}, csrf)
    r = client.post(f"/human-eval/items/{item_id}/grade", data={**good, "csrf": "forged"}, follow_redirects=False)
    assert r.headers["location"].endswith("notice=csrf")
    r = client.post(f"/human-eval/items/{item_id}/grade", data={k: v for k, v in good.items() if k != "csrf"},
                    follow_redirects=False)
    assert r.headers["location"].endswith("notice=csrf")
    for bad in ({"a_clarity": 6}, {"b_correctness": 0}, {"a_risk_flag": "maybe"}, {"b_strategy_quality": "x"}):
        r = client.post(f"/human-eval/items/{item_id}/grade", data={**good, **bad}, follow_redirects=False)
        assert r.headers["location"] == f"/human-eval/adapter/{adapter}?notice=badgrade", bad
    with app.state.db.read() as s:
        assert s.query(HumanEvalGrade).count() == 0
    r = client.post(f"/human-eval/items/{item_id}/grade", data=good, follow_redirects=False)
    assert r.headers["location"].endswith("notice=graded")
    # grading again replaces this maintainer's grade instead of counting twice
    client.post(f"/human-eval/items/{item_id}/grade", data=_form({"a": (1, 1, 1, 1, "no"), "b": (5, 5, 5, 5, "yes")}, csrf))
    with app.state.db.read() as s:
        assert [g.scores["candidate"]["clarity"] for g in s.query(HumanEvalGrade)] == [5]  # B is the candidate
    assert client.post("/human-eval/items/999/grade", data=good, follow_redirects=False).headers["location"] \
        .endswith("notice=noitem")


def test_release_page_shows_the_release_grades(client, app, users):
    db = app.state.db
    with db.write() as s:
        s.add(Release(version="2026.49", status="published", manifest={"adapters": []}, notes="merged 0 adapters",
                      is_current=True, published_at=utcnow()))
    he.add_pairs(db, "release", "2026.49", "alpha-bench",
                 [he.PairIn(question_id="alpha-001", question="A reversal alpha?", base_answer="rank(close)",
                            candidate_answer="rank(-1 * delta(close, 5))")], rng=lambda: True)
    assert "Human evaluation of 2026.49" not in client.get("/releases").text  # nothing graded yet
    csrf = _sign_in(client, users["root"])
    main = _main(client.get("/human-eval/release/2026.49").text)
    item = int(re.search(r"/human-eval/items/(\d+)/grade", main).group(1))
    r = client.post(f"/human-eval/items/{item}/grade", data=_form({"a": (4, 5, 3, 5, "yes"), "b": (2, 1, 3, 1, "no")}, csrf),
                    follow_redirects=False)
    assert r.headers["location"] == "/human-eval/release/2026.49?notice=graded"
    client.cookies.clear()
    page = client.get("/releases").text
    assert "Human evaluation of 2026.49: 1 blind grade of 1 answer pairs" in page
    assert re.search(r"Correctness</th>\s*<td class=\"num\">5.00</td><td class=\"num\">1.00</td><td class=\"num\">100%", page)
    assert re.search(r"Number accuracy</th>\s*<td class=\"num\">3.00</td><td class=\"num\">3.00</td><td class=\"num\">50%", page)
    assert "100% flagged" in page and "0% flagged" in page
    # ... and in the release notes shown on the page
    assert "## Human evaluation" in page and "| Correctness | 5.00 | 1.00 | 100% |" in page
    assert client.get("/v1/human-eval").json()["release"]["2026.49"]["win_rate"] == 1.0


def test_nobody_grades_their_own_adapter(client, app, users):
    from quantgrid.hub.server.auth import add_user

    token = add_user(app.state.db, "ada", admin=True)  # a maintainer who also contributes
    ada = {"Authorization": f"Bearer {token}"}
    mine = _push(client, ada, b"PK\x03\x04ada-own")
    _accept(app, mine)
    _store(app, mine, 1, itertools.repeat(True))
    csrf = _sign_in(client, ada)
    r = client.get(f"/human-eval/adapter/{mine}")
    assert r.status_code == 403 and "your own adapter" in r.text and CAND not in r.text
    with app.state.db.read() as s:
        item_id = s.query(he.HumanEvalItem.id).scalar()
    r = client.post(f"/human-eval/items/{item_id}/grade",
                    data=_form({"a": (5, 5, 5, 5, "yes"), "b": (1, 1, 1, 1, "no")}, csrf), follow_redirects=False)
    assert r.headers["location"].endswith("notice=owngrade")
    with app.state.db.read() as s:
        assert s.query(HumanEvalGrade).count() == 0


def test_a_published_release_queues_its_pairs_once_and_zero_turns_it_off(app):
    from quantgrid.hub.server.models import Job

    db = app.state.db
    with db.write() as s:
        he.queue_release(s, "2026.49", 0)
    with db.read() as s:
        assert s.query(Job).filter_by(kind=he.JOB_KIND).count() == 0
    for _ in range(2):  # a retried publish does not queue the same sample twice
        with db.write() as s:
            he.queue_release(s, "2026.49", 5)
    with db.read() as s:
        (job,) = s.query(Job).filter_by(kind=he.JOB_KIND).all()
    assert job.payload == {"kind": "release", "target": "2026.49", "benchmark": "finance-dev", "n": 5, "seed": 0,
                           "max_new_tokens": 128}
    assert job.priority > 100  # behind validations


def test_a_release_candidate_is_read_through_its_row(app, settings, tmp_path):
    """The grading job finds a release where the hub keeps it (a storage_dir that moved since it
    was published, or object storage), not only at the path recorded when it was built."""
    from types import SimpleNamespace

    from quantgrid.errors import NotFound
    from quantgrid.hub.server.releases import release_root

    db = app.state.db
    with db.write() as s:
        s.add(Release(version="2026.49", status="published", manifest={"adapters": []}, notes="",
                      path=str(tmp_path / "moved-away" / "2026.49"), is_current=True, published_at=utcnow()))
    here = release_root(settings) / "2026.49"
    here.mkdir(parents=True)
    (here / "adapter_model.safetensors").write_bytes(b"weights")
    ctx = SimpleNamespace(settings=settings, db=db)
    assert he.candidate_dir(ctx, "release", "2026.49", tmp_path) == here
    (here / "adapter_model.safetensors").unlink()
    with pytest.raises(NotFound, match="files of release 2026.49 are gone"):
        he.candidate_dir(ctx, "release", "2026.49", tmp_path)
    with pytest.raises(NotFound, match="no published release 2026.50"):
        he.candidate_dir(ctx, "release", "2026.50", tmp_path)
