"""HubClient: where URL and token come from, the 0600 credentials file, status -> typed errors."""

from __future__ import annotations

import json
import stat

import httpx
import pytest

from quantgrid import errors
from quantgrid.hub import client as hc
from quantgrid.hub.client import HubClient


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTGRID_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("QUANTGRID_TOKEN", raising=False)
    monkeypatch.delenv("QUANTGRID_HUB", raising=False)


def test_credentials_file_is_private_and_round_trips(tmp_path):
    path = hc.save_credentials("hub.example:8080/", "qg_secret")
    assert path == tmp_path / "cfg" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"hub": "http://hub.example:8080", "token": "qg_secret"}
    c = HubClient()
    assert (c.url, c.token) == ("http://hub.example:8080", "qg_secret")
    assert HubClient("http://elsewhere:1").token is None  # a token is only sent to the hub it was saved for
    assert hc.delete_credentials() and not path.exists() and not hc.delete_credentials()


def test_environment_overrides_saved_credentials(monkeypatch):
    hc.save_credentials("http://saved:1", "qg_saved")
    monkeypatch.setenv("QUANTGRID_HUB", "http://env:2")
    monkeypatch.setenv("QUANTGRID_TOKEN", "qg_env")
    c = HubClient()
    assert (c.url, c.token) == ("http://env:2", "qg_env")
    assert HubClient("http://arg:3", "qg_arg").token == "qg_arg"


def _client_answering(status: int, body: dict | str, headers: dict | None = None) -> HubClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, dict):
            return httpx.Response(status, json=body, headers=headers)
        return httpx.Response(status, text=body, headers=headers)

    return HubClient("http://hub.test", "qg_x", transport=httpx.MockTransport(handler), retries=0)


@pytest.mark.parametrize("status,cls", [
    (401, errors.AuthError), (403, errors.PermissionDenied), (404, errors.NotFound), (409, errors.Conflict),
    (413, errors.PayloadTooLarge), (422, errors.Unprocessable), (429, errors.RateLimited),
    (500, errors.ServerError), (418, errors.HubError),
])
def test_status_codes_become_typed_errors_with_message_and_hint(status, cls):
    c = _client_answering(status, {"error": {"code": "x", "message": "what went wrong", "hint": "do this"}},
                          {"Retry-After": "7"})
    with pytest.raises(cls) as info:
        c.whoami()
    assert type(info.value) is cls
    assert info.value.message == "what went wrong" and info.value.hint == "do this"
    if status == 429:
        assert info.value.retry_after == 7


def test_non_json_error_body_still_gives_a_message():
    with pytest.raises(errors.ServerError, match="HTTP 502: bad gateway"):
        _client_answering(502, "bad gateway").whoami()


def test_unreachable_hub_is_network_error():
    with pytest.raises(errors.NetworkError) as info:
        HubClient("http://127.0.0.1:9", "t", retries=0).health()
    assert "QUANTGRID_HUB" in info.value.hint


def test_auth_commands_need_a_token_before_any_request():
    calls = []
    c = HubClient("http://hub.test", transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    with pytest.raises(errors.AuthError, match="not logged in"):
        c.whoami()
    assert calls == []


def test_get_recipe_checks_the_hash():
    from quantgrid.recipe import Recipe

    recipe = Recipe(base_model="org/base")
    good = {"recipe": recipe.model_dump(mode="json"), "hash": recipe.hash()}
    assert _client_answering(200, good).get_recipe() == recipe
    with pytest.raises(errors.HubError, match="does not match"):
        _client_answering(200, {**good, "hash": "0" * 16}).get_recipe()


def test_client_module_imports_without_server_or_torch():
    import subprocess
    import sys

    code = ("import sys; import quantgrid.hub.client, quantgrid.hub.schemas; "
            "bad = [m for m in ('torch', 'fastapi', 'sqlalchemy', 'quantgrid.hub.server') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
