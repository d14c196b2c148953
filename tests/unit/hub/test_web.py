"""The hub's web pages through a real ASGI client: what each page shows, to whom, and the form rules."""

from __future__ import annotations

import re

from quantgrid.hub.server import submissions as subs
from quantgrid.hub.server.web import CSP, csrf_for

from .conftest import upload_headers

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>[link=https://evil.example]x[/link].zip'
RTL = "\u202eexe.piz \u05e9\u05dc\u05d5\u05dd"  # a right-to-left override, then Hebrew


def _push(client, auth, data: bytes, filename: str = "quantgrid_submission_1.zip") -> int:
    r = client.post("/v1/submissions", content=data,
                    headers={**upload_headers(auth, data), "X-Filename": filename})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _accept(app, sub_id: int, score: float = 0.0123456, message: str = "accepted") -> None:
    report = {"stage": "accept", "check": "accepted", "passed": True, "message": message,
              "hint": None, "numbers": {"improvement": score}, "diagnoses": [],
              "checks": [{"stage": "loss", "check": "proof_of_loss", "passed": True, "message": "beats the base"}]}
    subs.record_verdict(app.state.db, app.state.settings, sub_id, accepted=True, report=report, score=score)


def _sign_in(client, auth) -> str:
    token = auth["Authorization"].removeprefix("Bearer ")
    form = client.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = client.post("/login", data={"token": token, "csrf": nonce}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    return csrf_for(token)


def test_every_public_page_renders_without_a_token(client):
    for path, text in [("/", "Leaderboard"), ("/releases", "No release has been published yet"),
                       ("/recipe", "how to contribute"), ("/login", "API token")]:
        r = client.get(path)
        assert r.status_code == 200 and text in r.text, path
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"] == CSP and "script-src" not in CSP  # no script runs, ever
        assert "<script" not in r.text


def test_leaderboard_shows_an_accepted_adapter_and_sorts(client, app, users):
    _accept(app, _push(client, users["alice"], b"PK\x03\x04alice"))
    bob = _push(client, users["bob"], b"PK\x03\x04bob")
    _accept(app, bob, score=0.5)
    page = client.get("/").text
    assert "/contributors/alice" in page and "+0.012<" in page  # rounded to the hub's score_decimals (3)
    assert "0.0123" not in page
    by_name = client.get("/?sort=name").text
    assert by_name.index("/contributors/alice") < by_name.index("/contributors/bob")
    contributor = client.get("/contributors/bob")
    assert contributor.status_code == 200 and "1 of 1 submissions" in contributor.text
    assert client.get("/contributors/nobody").status_code == 404


def test_submission_page_is_for_its_owner_only(client, app, users):
    sub = _push(client, users["alice"], b"PK\x03\x04mine", filename=HOSTILE)
    assert client.get(f"/submissions/{sub}", follow_redirects=False).headers["location"].startswith("/login")
    _sign_in(client, users["bob"])
    assert client.get(f"/submissions/{sub}").status_code == 404  # someone else's: same as missing
    client.cookies.clear()
    _sign_in(client, users["alice"])
    page = client.get(f"/submissions/{sub}")
    assert page.status_code == 200 and "queued" in page.text
    # the hostile file name is text: escaped, never markup
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text
    assert "<img src=x" not in page.text
    _accept(app, sub, message=HOSTILE + RTL)
    page = client.get(f"/submissions/{sub}").text
    assert "proof_of_loss" in page and "passed" in page
    assert "<img src=x" not in page and RTL in page  # report text escaped; RTL kept as text
    client.cookies.clear()
    _sign_in(client, users["root"])  # admins see everyone's
    assert client.get(f"/submissions/{sub}").status_code == 200


def test_upvote_from_the_page_needs_sign_in_and_a_csrf_token(client, app, users):
    sub = _push(client, users["alice"], b"PK\x03\x04vote")
    _accept(app, sub)
    r = client.post(f"/adapters/{sub}/upvote", follow_redirects=False)
    assert r.headers["location"] == "/login?notice=signin"
    csrf = _sign_in(client, users["bob"])
    r = client.post(f"/adapters/{sub}/upvote", data={"csrf": "forged"}, follow_redirects=False)
    assert r.headers["location"] == "/?notice=csrf"
    assert client.get("/v1/adapters").json()["items"][0]["upvotes"] == 0
    r = client.post(f"/adapters/{sub}/upvote", data={"csrf": csrf}, follow_redirects=False)
    assert r.headers["location"] == "/?notice=voted"
    assert client.get("/v1/adapters").json()["items"][0]["upvotes"] == 1
    again = client.post(f"/adapters/{sub}/upvote", data={"csrf": csrf})
    assert "You already upvoted that adapter." in again.text
    client.cookies.clear()
    own = _sign_in(client, users["alice"])
    assert "You cannot upvote your own adapter." in client.post(f"/adapters/{sub}/upvote", data={"csrf": own}).text


def test_login_refuses_bad_tokens_and_forged_forms(client, users):
    form = client.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = client.post("/login", data={"token": "qg_not-a-token", "csrf": nonce}, follow_redirects=False)
    assert r.headers["location"] == "/login?notice=badtoken" and "qg_session" not in r.headers.get("set-cookie", "")
    token = users["alice"]["Authorization"].removeprefix("Bearer ")
    client.cookies.clear()  # no login cookie: a form posted from another site
    r = client.post("/login", data={"token": token, "csrf": nonce}, follow_redirects=False)
    assert r.headers["location"] == "/login?notice=csrf"


def test_a_notice_cannot_carry_arbitrary_text(client):
    page = client.get("/?notice=Your+account+is+locked,+call+555").text
    assert "call 555" not in page



def test_releases_page_plots_hidden_loss_by_release_with_notes_and_downloads(client, app):
    import datetime as dt

    from quantgrid.hub.server.models import Release

    now = dt.datetime(2026, 11, 29, 3, tzinfo=dt.timezone.utc)
    with app.state.db.write() as s:
        for i, (version, loss) in enumerate([("2026.47", 2.51234), ("2026.48", 2.40111)]):
            s.add(Release(version=version, status="published", path="/nowhere", is_current=i == 1,
                          metrics={"benchmark": {"new": loss}}, notes=f"notes of {version} <b>bold</b>",
                          published_at=now + dt.timedelta(days=7 * i)))
        s.add(Release(version="2026.49", status="building", metrics={"benchmark": {"new": 1.0}}))
    page = client.get("/releases").text
    assert "<svg" in page and "<polyline" in page and page.count("<circle") == 2  # published ones only
    assert page.index('id="r-2026.48"') < page.index('id="r-2026.47"')  # sections newest first
    assert "2026.48 (in service)" in page and "/v1/releases/2026.47/download" in page
    assert "2.512<" in page and "2.401<" in page and "2.51234" not in page  # rounded to score_decimals
    assert "&lt;b&gt;bold" in page and "2026.49" not in page


def test_wrong_tokens_on_the_login_form_are_rate_limited_like_the_api(client, app):
    from quantgrid.hub.server.ratelimit import RateLimiter

    form = client.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    app.state.limiter = RateLimiter(app.state.db, per_minute=60, burst=3)
    codes = [client.post("/login", data={"token": f"qg_guess{i}", "csrf": nonce}, follow_redirects=False).status_code
             for i in range(4)]
    assert codes == [303, 303, 303, 429]  # guessing tokens through the page costs what it costs on /v1
