"""The canary's HTTP client (``latam.process.canary``): the API key, and a Google ID token
for an IAM-only Cloud Run API, fetched again before it expires; no token, a failed round."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import httpx
import pytest

from latam import metrics
from latam.canary import Canary
from latam.cli import main
from latam.process import canary as client_module
from latam.process.canary import (
    ID_TOKEN_HEADER,
    REFRESH_MARGIN_SECONDS,
    GoogleIdToken,
    IdTokenError,
    canary_client,
    expiry,
)

AUDIENCE = "https://latam-staging-api-abc123-uc.a.run.app"


def jwt(exp: float, **claims: Any) -> str:
    """An unsigned JWT with these claims (the canary reads ``exp``; Cloud Run checks it)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return ".".join((part({"alg": "RS256", "typ": "JWT"}), part({"exp": exp, **claims}), "c2ln"))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Minter:
    """Hands out a new token per call, each valid an hour from the clock's now."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.audiences: list[str] = []

    def __call__(self, audience: str) -> str:
        self.audiences.append(audience)
        return jwt(self.clock.now + 3600, aud=audience, n=len(self.audiences))


def echo(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [], "next_cursor": None})

    return httpx.MockTransport(handle)


def test_every_request_carries_the_token_beside_the_api_key() -> None:
    clock = Clock(1_000_000.0)
    minter = Minter(clock)
    seen: list[httpx.Request] = []
    auth = GoogleIdToken(AUDIENCE, fetch=minter, clock=clock)
    headers = {"authorization": "Bearer lt_key"}
    with httpx.Client(transport=echo(seen), auth=auth, headers=headers) as client:
        client.get("https://api.example/v1/topics")
        client.post("https://api.example/v1/topics", json={"name": "x"})
    assert minter.audiences == [AUDIENCE]  # one token while it is fresh
    for request in seen:
        assert request.headers["authorization"] == "Bearer lt_key"  # the API's own gate
        assert request.headers[ID_TOKEN_HEADER] == f"Bearer {auth.token()}"  # Cloud Run's


def test_the_token_is_fetched_again_before_it_expires() -> None:
    clock = Clock(1_000_000.0)
    minter = Minter(clock)
    auth = GoogleIdToken(AUDIENCE, fetch=minter, clock=clock)
    first = auth.token()
    clock.now += 3600 - REFRESH_MARGIN_SECONDS - 1  # still comfortably valid
    assert auth.token() == first
    clock.now += 2  # inside the margin: a new one, before the old one expires
    second = auth.token()
    assert second != first
    assert len(minter.audiences) == 2


def test_no_token_is_a_request_error_and_the_request_is_never_sent() -> None:
    def refuse(audience: str) -> str:
        raise RuntimeError("metadata server unreachable")

    seen: list[httpx.Request] = []
    auth = GoogleIdToken(AUDIENCE, fetch=refuse)
    with (
        httpx.Client(transport=echo(seen), auth=auth) as client,
        pytest.raises(IdTokenError, match="no ID token"),
    ):
        client.get("https://api.example/v1/topics")
    assert seen == []
    assert issubclass(IdTokenError, httpx.HTTPError)


def test_an_unreadable_token_is_no_token() -> None:
    auth = GoogleIdToken(AUDIENCE, fetch=lambda audience: "not-a-jwt")
    with (
        httpx.Client(transport=echo([]), auth=auth) as client,
        pytest.raises(IdTokenError),
    ):
        client.get("https://api.example/v1/topics")


def test_a_round_without_a_token_fails_and_the_canary_goes_on() -> None:
    def refuse(audience: str) -> str:
        raise RuntimeError("metadata server unreachable")

    topic = "canary-no-token"
    auth = GoogleIdToken(AUDIENCE, fetch=refuse)
    with httpx.Client(base_url="https://api.example", transport=echo([]), auth=auth) as client:
        probe = Canary(client, topic, timeout=1.0, stop=threading.Event())
        outcome = probe.round()
    assert outcome.result == "publish_failed"
    assert outcome.detail == "IdTokenError"
    counted = metrics.CANARY_ROUNDS.labels(topic=topic, result="publish_failed")._value.get()
    assert counted == 1


def test_expiry_is_the_exp_claim() -> None:
    assert expiry(jwt(1_700_000_000)) == 1_700_000_000.0


def test_the_client_sends_an_id_token_only_when_given_an_audience() -> None:
    with canary_client(
        "https://api.example",
        api_key="lt_key",  # pragma: allowlist secret
        id_token_audience=None,
        timeout=5,
    ) as plain:
        assert plain.auth is None
        assert plain.headers["authorization"] == "Bearer lt_key"
    with canary_client(
        "https://api.example", api_key=None, id_token_audience=AUDIENCE, timeout=5
    ) as iam:
        assert isinstance(iam.auth, GoogleIdToken)
        assert iam.auth.audience == AUDIENCE
        assert "authorization" not in iam.headers


def test_the_cli_takes_the_audience_from_latam_canary_id_token_audience(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The setting reaches the client; minting the token goes through google-auth."""
    option = next(p for p in main.commands["canary"].params if p.name == "id_token_audience")
    assert option.envvar == "LATAM_CANARY_ID_TOKEN_AUDIENCE"
    built: dict[str, Any] = {}

    def fake_client(base_url: str, **kwargs: Any) -> httpx.Client:
        built.update(kwargs, base_url=base_url)
        raise SystemExit(0)  # stop before any round: only the wiring is under test

    monkeypatch.setattr(client_module, "canary_client", fake_client)
    monkeypatch.setenv("LATAM_CANARY_ID_TOKEN_AUDIENCE", AUDIENCE)
    monkeypatch.delenv("LATAM_API_KEY", raising=False)
    monkeypatch.setattr("signal.signal", lambda *args: None)  # leave pytest's handlers be
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["canary", "--url", AUDIENCE, "--rounds", "1"])
    assert result.exit_code == 0, result.output
    assert built == {
        "base_url": AUDIENCE,
        "api_key": None,
        "id_token_audience": AUDIENCE,
        "timeout": 10.0,
    }
