"""API keys, scopes, per-topic keys, revocation, rate limits and response headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from latam.api.app import create_app
from latam.auth import KeyStore
from latam.bootstrap import build_service
from latam.settings import Settings
from latam.storage import migrate


def build(tmp_path: Path, **overrides: object) -> tuple[TestClient, KeyStore]:
    settings = Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    keys = KeyStore(service.store.engine)  # type: ignore[attr-defined]
    return TestClient(create_app(service, settings, keys)), keys


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, KeyStore]]:
    client, keys = build(tmp_path, auth="on")
    with client:
        yield client, keys


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_auth_is_on_by_default_off_loopback() -> None:
    assert Settings(host="0.0.0.0").auth_enabled
    assert not Settings(host="127.0.0.1").auth_enabled
    assert Settings(host="127.0.0.1", auth="on").auth_enabled


def test_missing_wrong_and_unknown_keys_are_401_alike(api: tuple[TestClient, KeyStore]) -> None:
    client, keys = api
    _, token = keys.create(name="reader", scopes=["read"])
    key_id = token.split("_", 2)[1]
    attempts = [
        {},
        bearer("nonsense"),
        bearer(f"lt_{key_id}_wrongsecret"),
        bearer("lt_000000000000_wrongsecret"),
        {"Authorization": f"Basic {token}"},
    ]
    bodies = set()
    for headers in attempts:
        response = client.get("/v1/topics", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
        bodies.add(response.text)
    assert len(bodies) == 1, "the answer must not tell whether a key exists"
    assert client.get("/v1/topics", headers=bearer(token)).status_code == 200


def test_scopes(api: tuple[TestClient, KeyStore]) -> None:
    client, keys = api
    _, admin = keys.create(name="admin", scopes=["admin"])
    _, reader = keys.create(name="reader", scopes=["read"])
    _, writer = keys.create(name="writer", scopes=["publish"])
    assert client.post("/v1/topics", json={"name": "a"}, headers=bearer(reader)).status_code == 403
    created = client.post("/v1/topics", json={"name": "a"}, headers=bearer(admin))
    assert created.status_code == 201
    tid = created.json()["id"]
    path = f"/v1/topics/{tid}/messages"
    assert client.post(path, json={"data": {}}, headers=bearer(reader)).status_code == 403
    assert client.post(path, json={"data": {}}, headers=bearer(writer)).status_code == 202
    assert client.post(path, json={"data": {}}, headers=bearer(admin)).status_code == 202
    assert client.get(path, headers=bearer(writer)).status_code == 403
    assert client.get(path, headers=bearer(reader)).status_code == 200
    assert client.get("/v1/dead-letters", headers=bearer(reader)).status_code == 403
    assert client.get("/v1/dead-letters", headers=bearer(admin)).status_code == 200
    assert client.post("/api/data", json={"nombre": "b"}, headers=bearer(writer)).status_code == 403
    assert client.get("/api/data", headers=bearer(reader)).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_topic_bound_keys(api: tuple[TestClient, KeyStore]) -> None:
    client, keys = api
    _, admin = keys.create(name="admin", scopes=["admin"])
    one = client.post("/v1/topics", json={"name": "one"}, headers=bearer(admin)).json()["id"]
    two = client.post("/v1/topics", json={"name": "two"}, headers=bearer(admin)).json()["id"]
    _, bound = keys.create(name="one-only", scopes=["publish", "read"], topics=[one])
    ok = client.post(f"/v1/topics/{one}/messages", json={"data": {}}, headers=bearer(bound))
    assert ok.status_code == 202
    denied = client.post(f"/v1/topics/{two}/messages", json={"data": {}}, headers=bearer(bound))
    assert denied.status_code == 403
    assert client.get(f"/v1/topics/{two}/messages", headers=bearer(bound)).status_code == 403
    assert client.get("/v1/stats", headers=bearer(bound)).status_code == 403
    assert client.get("/v1/topics", headers=bearer(bound)).status_code == 403
    assert client.get(f"/v1/topics/{one}/stats", headers=bearer(bound)).status_code == 200


def test_revocation_and_last_used(api: tuple[TestClient, KeyStore]) -> None:
    client, keys = api
    key, token = keys.create(name="temp", scopes=["read"])
    assert key.last_used_at is None
    assert client.get("/v1/topics", headers=bearer(token)).status_code == 200
    assert keys.get(key.key_id).last_used_at is not None
    keys.revoke(key.key_id)
    keys._cache.clear()  # the cache lets a revocation take up to CACHE_SECONDS elsewhere
    assert client.get("/v1/topics", headers=bearer(token)).status_code == 401


def test_keys_are_stored_only_as_hashes(api: tuple[TestClient, KeyStore]) -> None:
    _, keys = api
    _, token = keys.create(name="x", scopes=["read"])
    secret = token.split("_", 2)[2]
    assert len(secret) >= 22  # >= 128 bits of randomness, URL-safe base64
    with keys.engine.connect() as conn:
        dump = "".join(str(row) for row in conn.exec_driver_sql("SELECT * FROM api_keys"))
    assert secret not in dump


def test_anonymous_reads_when_allowed(tmp_path: Path) -> None:
    client, _ = build(tmp_path, auth="on", anonymous_read=True)
    with client:
        assert client.get("/v1/topics").status_code == 200
        assert client.post("/v1/topics", json={"name": "x"}).status_code == 401


def test_rate_limit_per_key_is_429_with_retry_after(tmp_path: Path) -> None:
    client, keys = build(tmp_path, auth="on", rate_limit_per_second=1, rate_limit_burst=3)
    _, token = keys.create(name="busy", scopes=["read"])
    _, other = keys.create(name="calm", scopes=["read"])
    with client:
        codes = [client.get("/v1/topics", headers=bearer(token)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert 429 in codes[3:]
        limited = client.get("/v1/topics", headers=bearer(token))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/v1/topics", headers=bearer(other)).status_code == 200


def test_security_headers_and_cors(tmp_path: Path) -> None:
    client, _ = build(tmp_path, cors_origins=["https://dash.example"])
    with client:
        response = client.get("/healthz")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "default-src 'none'" in response.headers["content-security-policy"]
        preflight = client.options(
            "/v1/topics",
            headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://dash.example"
    plain, _ = build(tmp_path / "b")
    with plain:
        assert (
            "access-control-allow-origin"
            not in plain.get("/healthz", headers={"Origin": "https://evil.example"}).headers
        )


def test_bootstrap_key_from_the_environment(tmp_path: Path) -> None:
    token = "b" * 40
    settings = Settings(data_dir=tmp_path, auth="on", bootstrap_api_key=token)  # type: ignore[arg-type]
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    with TestClient(create_app(service, settings)) as client:
        assert (
            client.post("/v1/topics", json={"name": "a"}, headers=bearer(token)).status_code == 201
        )
        assert client.get("/v1/topics", headers=bearer("b" * 39)).status_code == 401
    with pytest.raises(ValueError, match="32"):
        Settings(bootstrap_api_key="short")  # type: ignore[arg-type]
