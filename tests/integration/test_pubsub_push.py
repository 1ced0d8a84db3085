"""The Pub/Sub push endpoint: Google OIDC verification and the push envelope, offline.

Tokens are signed with an RSA key made here; its certificate is served to google-auth
through an injected transport, so nothing touches the network.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from google.auth import crypt, jwt

from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service
from latam.settings import Settings
from latam.storage import migrate

AUDIENCE = "https://latam.example.com/v1/pubsub/push"
ACCOUNT = "pusher@latam-test.iam.gserviceaccount.com"
KEY_ID = "test-key"


class CertsResponse:
    def __init__(self, data: bytes, status: int = 200) -> None:
        self.data, self.status = data, status
        self.headers: dict[str, str] = {"Cache-Control": "public, max-age=19000"}


class FakeCertsRequest:
    """A google.auth transport that answers every certificate fetch with our cert, and
    counts the fetches; ``status`` other than 200 plays an outage of Google's endpoint."""

    def __init__(self, certs: dict[str, str]) -> None:
        self.data = orjson.dumps(certs)
        self.fetches: list[str] = []
        self.status = 200

    def __call__(self, url: str, method: str = "GET", **_: Any) -> CertsResponse:
        self.fetches.append(url)
        return CertsResponse(self.data if self.status == 200 else b"oops", self.status)


def make_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return private, cert.public_bytes(serialization.Encoding.PEM).decode()


PRIVATE, CERT = make_key()
OTHER_PRIVATE, _ = make_key()


def token(private: str = PRIVATE, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 600,
        "sub": "1234",
        **claims,
    }
    signer = crypt.RSASigner.from_string(private, KEY_ID)
    return jwt.encode(signer, payload).decode()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path,
        pubsub_push_audience=AUDIENCE,
        pubsub_push_service_account=ACCOUNT,
        max_message_bytes=1024,
    )
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    service.create_topic(name="orders")
    app = create_app(service, settings, build_keys(settings, service.store))
    app.state.google_auth_request = FakeCertsRequest({KEY_ID: CERT})
    with TestClient(app, raise_server_exceptions=False) as made:
        yield made


def envelope(data: bytes = b'{"k": 1}', **attributes: str) -> dict[str, Any]:
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": {"topic": "orders", **attributes},
            "messageId": "1700000000001",
            "publishTime": "2026-01-02T03:04:05.678Z",
        },
        "subscription": "projects/latam-test/subscriptions/push",
        "deliveryAttempt": 1,
    }


def push(client: TestClient, body: Any, bearer: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {bearer}"} if bearer is not None else {}
    return client.post("/v1/pubsub/push", json=body, headers=headers)


def stored(client: TestClient) -> list[dict[str, Any]]:
    return list(client.get("/v1/topics/1/messages").json()["data"])


def test_a_signed_push_is_stored_once_and_answered_204(client: TestClient) -> None:
    first = push(client, envelope(source="gcloud"), token())
    assert first.status_code == 204, first.text
    again = push(client, envelope(source="gcloud"), token())  # Pub/Sub redelivers
    assert again.status_code == 204
    messages = stored(client)
    assert [m["id"] for m in messages] == ["1700000000001"]
    assert messages[0]["data"] == {"k": 1}
    assert messages[0]["attributes"] == {"source": "gcloud"}
    assert messages[0]["published_at"].startswith("2026-01-02T03:04:05.678")


def test_latam_envelope_attributes_win_over_pubsub_ids(client: TestClient) -> None:
    response = push(client, envelope(message_id="mine-1"), token())
    assert response.status_code == 204
    assert [m["id"] for m in stored(client)] == ["mine-1"]


@pytest.mark.parametrize("bearer", [None, "", "not-a-jwt", "a.b.c"])
def test_missing_or_garbled_token_is_401(client: TestClient, bearer: str | None) -> None:
    response = push(client, envelope(), bearer)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_token_signed_by_another_key_is_401(client: TestClient) -> None:
    assert push(client, envelope(), token(OTHER_PRIVATE)).status_code == 401


def test_expired_token_is_401(client: TestClient) -> None:
    old = int(time.time()) - 7200
    assert push(client, envelope(), token(iat=old, exp=old + 600)).status_code == 401


def test_foreign_issuer_is_401(client: TestClient) -> None:
    assert push(client, envelope(), token(iss="https://evil.example")).status_code == 401


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://elsewhere.example.com"},
        {"email": "someone@else.iam.gserviceaccount.com"},
        {"email_verified": False},
    ],
)
def test_wrong_audience_or_account_is_403(client: TestClient, claims: dict[str, Any]) -> None:
    response = push(client, envelope(), token(**claims))
    assert response.status_code == 403
    assert response.json()["status"] == 403
    assert stored(client) == []


@pytest.mark.parametrize(
    ("body", "slug"),
    [
        ({"nope": True}, "bad_envelope"),
        ({"message": {"data": "%%%", "messageId": "1"}}, "bad_envelope"),
        (envelope(b"not json"), "invalid_json"),
        (envelope(b"[1, 2]"), "not_object"),
        (envelope(b'{"big": "' + b"x" * 2000 + b'"}'), "too_large"),
        (envelope(topic="ghost"), "unknown_topic"),
        # What made the push endpoint answer 500 before every input met one guard:
        (envelope(published_at="9999-12-31T23:59:59-01:00"), "invalid_timestamp"),
        (envelope(published_at="1733112345000"), "invalid_timestamp"),
        (envelope(topic="a\x00b"), "invalid_topic"),
        (envelope(topic_id="x"), "invalid_topic"),
        ({"message": {"data": "e30=", "messageId": 7, "attributes": {}}}, "bad_envelope"),
        (
            {"message": {"data": "e30=", "messageId": "1", "attributes": {"topic": 5}}},
            "invalid_attributes",
        ),
        ({"message": {"data": "e30=", "messageId": "1", "attributes": ["topic"]}}, "bad_envelope"),
    ],
)
def test_permanently_bad_pushes_are_400(client: TestClient, body: Any, slug: str) -> None:
    response = push(client, body, token())
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith(slug)
    assert stored(client) == []


def certs(client: TestClient) -> FakeCertsRequest:
    fake: FakeCertsRequest = client.app.state.google_auth_request  # type: ignore[attr-defined]
    return fake


def test_google_certificates_are_fetched_once_not_per_push(client: TestClient) -> None:
    for n in range(5):
        assert push(client, envelope(message_id=f"m{n}"), token()).status_code == 204
    assert push(client, envelope(), token(OTHER_PRIVATE)).status_code == 401
    assert certs(client).fetches == ["https://www.googleapis.com/oauth2/v1/certs"]


def test_an_unknown_key_id_refetches_at_most_once_a_minute(client: TestClient) -> None:
    assert push(client, envelope(), token()).status_code == 204
    signer = crypt.RSASigner.from_string(PRIVATE, "rotated-key")
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": ACCOUNT}
    rotated = jwt.encode(signer, {**claims, "iat": now, "exp": now + 600}).decode()
    for _ in range(3):
        assert push(client, envelope(), rotated).status_code == 401
    assert len(certs(client).fetches) == 1, "fetched again within a minute of the last fetch"


def test_certificate_outage_is_503_so_pubsub_retries(client: TestClient) -> None:
    from latam.api.pubsub_push import CERTS_RETRY_SECONDS, GoogleCerts

    clock = [1000.0]
    client.app.state.google_certs = GoogleCerts(certs(client), clock=lambda: clock[0])  # type: ignore[attr-defined]
    certs(client).status = 500
    response = push(client, envelope(), token())
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert push(client, envelope(), token()).status_code == 503
    assert len(certs(client).fetches) == 1, "no second fetch right after a failed one"
    assert stored(client) == []
    certs(client).status = 200
    clock[0] += CERTS_RETRY_SECONDS
    assert push(client, envelope(), token()).status_code == 204
    assert len(certs(client).fetches) == 2


def test_a_token_header_of_the_wrong_shape_is_401(client: TestClient) -> None:
    for header in (b"[1]", b'{"alg": "RS256", "kid": [1]}', b'"x"'):
        part = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
        assert push(client, envelope(), f"{part}.e30.c2ln").status_code == 401


def test_an_oversized_token_is_refused_unread(client: TestClient) -> None:
    assert push(client, envelope(), "x" * 9000).status_code == 401
    assert certs(client).fetches == []


def test_without_push_configured_the_route_does_not_exist(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, pubsub_push_audience=AUDIENCE)
    service = build_service(settings)
    app = create_app(service, settings, build_keys(settings, service.store))
    with TestClient(app) as plain:
        assert push(plain, envelope(), token()).status_code == 404
        assert "/v1/pubsub/push" not in plain.get("/openapi.json").json()["paths"]


def test_store_outage_is_503_so_pubsub_retries(client: TestClient) -> None:
    from latam.errors import StoreUnavailable

    service = client.app.state.service  # type: ignore[attr-defined]

    def down(*_: Any, **__: Any) -> None:
        raise StoreUnavailable("database is down")

    service.store.write_messages = down
    response = push(client, envelope(), token())
    assert response.status_code == 503
    assert response.headers["retry-after"]
