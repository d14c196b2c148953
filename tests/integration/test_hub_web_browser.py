"""The hub's web pages in a real browser (Debian's chromium, driven by Playwright) against a
real `quantgrid hub serve` process on 127.0.0.1.

Set QUANTGRID_SCREENSHOTS_DIR to keep the screenshots (docs/img/ holds the ones the operator
guide shows: `QUANTGRID_SCREENSHOTS_DIR=docs/img pytest tests/integration/test_hub_web_browser.py`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from _hub_process import HubProcess  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI") == "true":  # CI installs chromium (.ci/run): its absence is a failure there
        raise RuntimeError("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)

# Chromium as root, offline: no sandbox, and none of its own network traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
HOSTILE_FILE = '<script>alert("x")</script><img src=x onerror=alert(1)>.zip'


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubweb")
    h = HubProcess(root / "storage", args=("--no-worker",))
    h.start()
    h.tokens = {name: h.add_user(name) for name in ("alice", "bob")}
    h.tokens["root"] = h.add_user("root", admin=True)  # a maintainer, for human evaluation
    yield h
    h.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    pg = context.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))  # any alert() means injected script ran
    pg.dialogs = dialogs
    yield pg
    context.close()


def _shot(page, tmp_path: Path, name: str) -> None:
    out = Path(os.environ.get("QUANTGRID_SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"hub-{name}.png"), full_page=True)


def _push_and_accept(hub: HubProcess, user: str, body: bytes, filename: str) -> int:
    """A real upload over HTTP; then the verdict the validation worker records for an accepted adapter."""
    from quantgrid.hub.server import submissions as subs
    from quantgrid.hub.server.db import Database
    from quantgrid.hub.settings import HubSettings

    r = httpx.post(f"{hub.url}/v1/submissions", content=body, timeout=30, headers={
        "Authorization": f"Bearer {hub.tokens[user]}", "X-Content-SHA256": hashlib.sha256(body).hexdigest(),
        "Content-Type": "application/zip", "X-Filename": filename})
    assert r.status_code == 201, r.text
    sub_id = r.json()["id"]
    db = Database(f"sqlite:///{(hub.storage / 'hub.db').resolve()}")
    try:
        report = {"stage": "accept", "check": "accepted", "passed": True, "message": "beats the base and the release",
                  "hint": None, "numbers": {"improvement": 0.0421}, "diagnoses": [],
                  "checks": [{"stage": "loss", "check": "proof_of_loss", "passed": True, "message": "CI below zero"}]}
        subs.record_verdict(db, HubSettings.load(storage_dir=hub.storage, worker_enabled=False), sub_id,
                            accepted=True, report=report, score=0.0421)
    finally:
        db.dispose()
    return sub_id


def _sign_in(page, hub: HubProcess, user: str) -> None:
    page.goto(f"{hub.url}/login")
    page.get_by_label("API token").fill(hub.tokens[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{hub.url}/")
    assert f"Signed in as {user}" in page.inner_text("header")


def test_pages_render_and_the_leaderboard_follows_an_accepted_push(hub, page, tmp_path):
    page.goto(f"{hub.url}/")
    assert page.title() == "Leaderboard · quantgrid" and "No contributions yet" in page.inner_text("main")
    sub_id = _push_and_accept(hub, "alice", b"PK\x03\x04alice-adapter", HOSTILE_FILE)
    page.reload()
    row = page.get_by_role("row").filter(has_text="alice").first
    assert "alice" in row.inner_text() and "+0.042" in page.inner_text("main")
    _shot(page, tmp_path, "leaderboard")
    page.get_by_role("link", name="alice").first.click()
    assert page.url.endswith("/contributors/alice") and "1 of 1 submissions" in page.inner_text("main")
    for path, heading in [("/releases", "Releases"), ("/recipe", "The recipe and how to contribute")]:
        page.goto(f"{hub.url}{path}")
        assert page.get_by_role("heading", level=1).inner_text() == heading
        _shot(page, tmp_path, path.strip("/"))
    # a submission's page is its owner's: anonymous visitors are sent to sign in
    page.goto(f"{hub.url}/submissions/{sub_id}")
    assert page.url.startswith(f"{hub.url}/login")
    assert page.dialogs == []


def test_sign_in_upvote_and_hostile_text_stays_text(hub, page, tmp_path):
    sub_id = _push_and_accept(hub, "alice", b"PK\x03\x04second-adapter", HOSTILE_FILE)
    _sign_in(page, hub, "bob")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["qg_session"]["httpOnly"] and cookies["qg_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the token
    page.get_by_role("button", name=f"Upvote adapter {sub_id}").click()
    assert "Upvote recorded." in page.get_by_role("status").inner_text()
    votes = {a["id"]: a["upvotes"] for a in httpx.get(f"{hub.url}/v1/adapters").json()["items"]}
    assert votes[sub_id] == 1
    page.get_by_role("button", name=f"Upvote adapter {sub_id}").click()
    assert "already upvoted" in page.get_by_role("status").inner_text()
    page.get_by_role("button", name="Sign out").click()
    assert "Signed out." in page.get_by_role("status").inner_text()

    _sign_in(page, hub, "alice")
    page.goto(f"{hub.url}/submissions/{sub_id}")
    main = page.inner_text("main")
    assert HOSTILE_FILE.replace("/", "_") in main  # shown literally, as text (the hub drops path separators)
    assert page.locator("main img").count() == 0 and page.dialogs == []
    assert "proof_of_loss" in main and "accepted" in main
    _shot(page, tmp_path, "submission")


def test_pages_work_from_the_keyboard(hub, page):
    page.goto(f"{hub.url}/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    page.goto(f"{hub.url}/login")
    page.keyboard.press("Tab")  # skip link
    for _ in range(8):  # nav links, then the token field: reachable without a mouse
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "token":
            break
    assert page.evaluate("document.activeElement.id") == "token"


def _grade(page, side: str, scores: tuple[int, int, int, int], flag: str) -> None:
    for dim, score in zip(("Clarity", "Correctness", "Number accuracy", "Strategy quality"), scores, strict=True):
        page.get_by_role("group", name=f"Answer {side}: {dim}").get_by_label(str(score), exact=True).check()
    page.get_by_role("group", name=f"Answer {side}: does it flag the risk?").get_by_label(flag, exact=True).check()


def test_a_maintainer_grades_answer_pairs_blind(hub, page, tmp_path):
    sub_id = _push_and_accept(hub, "alice", b"PK\x03\x04graded-adapter", "graded.zip")
    pairs = {"benchmark": "finance-dev", "pairs": [
        {"question_id": f"fd-{i}", "question": f"What is the current ratio of firm {i}?", "context": "assets 10; debts 5",
         "base_answer": f"It is probably fine #{i}.", "candidate_answer": f"Current ratio = 10 / 5 = 2.0 #{i}; liquidity risk is low."}
        for i in range(2)]}
    r = httpx.post(f"{hub.url}/v1/human-eval/adapter/{sub_id}/pairs", json=pairs, timeout=30,
                   headers={"Authorization": f"Bearer {hub.tokens['root']}"})
    assert r.status_code == 201 and r.json() == {"added": 2}
    # a contributor is refused
    _sign_in(page, hub, "bob")
    assert page.goto(f"{hub.url}/human-eval").status == 403
    page.get_by_role("button", name="Sign out").click()

    _sign_in(page, hub, "root")
    page.get_by_role("link", name="Human evaluation").click()
    page.get_by_role("link", name=f"Grade adapter {sub_id}").click()
    main = page.inner_text("main")
    assert "0 of 2 pairs" in main and "Answer A" in main and "Answer B" in main
    assert "base" not in main.lower() and "candidate" not in main.lower()  # blind
    _shot(page, tmp_path, "human-eval")
    for done in (1, 2):
        # grade whichever side holds the worked answer higher, as a grader reading them would
        a_text = page.locator("#answer-a + pre").inner_text()
        good, bad = ((5, 5, 5, 4), (2, 1, 1, 1))
        _grade(page, "A", good if "Current ratio" in a_text else bad, "yes" if "Current ratio" in a_text else "no")
        _grade(page, "B", bad if "Current ratio" in a_text else good, "no" if "Current ratio" in a_text else "yes")
        page.get_by_role("button", name="Save grades").click()
        assert "Grades recorded." in page.get_by_role("status").inner_text()
        assert f"{done} of 2 pairs" in page.inner_text("main")
    assert "Nothing left to grade" in page.inner_text("main")
    got = httpx.get(f"{hub.url}/v1/human-eval/adapter/{sub_id}", timeout=30).json()
    assert got["grades"] == 2 and got["win_rate"] == 1.0 and got["dimensions"]["risk_flag"]["candidate"] == 1.0
    page.goto(f"{hub.url}/")
    row = page.get_by_role("row").filter(has_text=f"adapter-{sub_id} v1")
    assert "100% (2 grades)" in row.inner_text()
    assert page.dialogs == []
