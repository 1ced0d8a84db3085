"""API keys, scopes, per-topic keys, revocation, rate limits, response headers and
``latam keys``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from latam.api.app import create_app
from latam.bootstrap import build_keys, build_service, build_store
from latam.cli import main
from latam.errors import NotFound, SchemaNotCurrent
from latam.keys import ApiKey, KeyVerifier, create_key
from latam.settings import Settings
from latam.storage import migrate
from latam.storage.dialects import build_engine
from latam.storage.keys import SqlKeyStore
from tests.databases import STORES, temporary_database


def build(tmp_path: Path, **overrides: object) -> tuple[TestClient, KeyVerifier]:
    settings = Settings(data_dir=tmp_path, **overrides)  # type: ignore[arg-type]
    service = build_service(settings)
    migrate.upgrade(service.store.engine)  # type: ignore[attr-defined]
    keys = build_keys(settings, service.store)
    return TestClient(create_app(service, settings, keys)), keys


def new_key(
    keys: KeyVerifier, name: str, scopes: Sequence[str], topics: Sequence[int] | None = None
) -> tuple[ApiKey, str]:
    return create_key(keys.store, name=name, scopes=scopes, topics=topics)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, KeyVerifier]]:
    client, keys = build(tmp_path, auth="on")
    with client:
        yield client, keys


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_auth_is_on_by_default_off_loopback() -> None:
    assert Settings(host="0.0.0.0").auth_enabled
    assert not Settings(host="127.0.0.1").auth_enabled
    assert Settings(host="127.0.0.1", auth="on").auth_enabled


def test_missing_wrong_and_unknown_keys_are_401_alike(api: tuple[TestClient, KeyVerifier]) -> None:
    client, keys = api
    _, token = new_key(keys, "reader", ["read"])
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


def test_scopes(api: tuple[TestClient, KeyVerifier]) -> None:
    client, keys = api
    _, admin = new_key(keys, "admin", ["admin"])
    _, reader = new_key(keys, "reader", ["read"])
    _, writer = new_key(keys, "writer", ["publish"])
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


def test_topic_bound_keys(api: tuple[TestClient, KeyVerifier]) -> None:
    client, keys = api
    _, admin = new_key(keys, "admin", ["admin"])
    one = client.post("/v1/topics", json={"name": "one"}, headers=bearer(admin)).json()["id"]
    two = client.post("/v1/topics", json={"name": "two"}, headers=bearer(admin)).json()["id"]
    _, bound = new_key(keys, "one-only", ["publish", "read"], [one])
    ok = client.post(f"/v1/topics/{one}/messages", json={"data": {}}, headers=bearer(bound))
    assert ok.status_code == 202
    denied = client.post(f"/v1/topics/{two}/messages", json={"data": {}}, headers=bearer(bound))
    assert denied.status_code == 403
    assert client.get(f"/v1/topics/{two}/messages", headers=bearer(bound)).status_code == 403
    assert client.get("/v1/stats", headers=bearer(bound)).status_code == 403
    assert client.get("/v1/topics", headers=bearer(bound)).status_code == 403
    assert client.get(f"/v1/topics/{one}/stats", headers=bearer(bound)).status_code == 200


def test_revocation_and_last_used(api: tuple[TestClient, KeyVerifier]) -> None:
    client, keys = api
    key, token = new_key(keys, "temp", ["read"])
    assert key.last_used_at is None
    assert client.get("/v1/topics", headers=bearer(token)).status_code == 200
    assert keys.store.get(key.key_id).last_used_at is not None
    keys.store.revoke(key.key_id)
    keys.forget(key.key_id)  # the cache lets a revocation take up to CACHE_SECONDS elsewhere
    assert client.get("/v1/topics", headers=bearer(token)).status_code == 401


def test_keys_are_stored_only_as_hashes(api: tuple[TestClient, KeyVerifier]) -> None:
    _, keys = api
    _, token = new_key(keys, "x", ["read"])
    secret = token.split("_", 2)[2]
    assert len(secret) >= 22  # >= 128 bits of randomness, URL-safe base64
    assert isinstance(keys.store, SqlKeyStore)
    with keys.store.engine.connect() as conn:
        dump = "".join(str(row) for row in conn.exec_driver_sql("SELECT * FROM api_keys"))
    assert secret not in dump


def test_anonymous_reads_when_allowed(tmp_path: Path) -> None:
    client, _ = build(tmp_path, auth="on", anonymous_read=True)
    with client:
        assert client.get("/v1/topics").status_code == 200
        assert client.post("/v1/topics", json={"name": "x"}).status_code == 401


def test_rate_limit_per_key_is_429_with_retry_after(tmp_path: Path) -> None:
    client, keys = build(tmp_path, auth="on", rate_limit_per_second=1, rate_limit_burst=3)
    _, token = new_key(keys, "busy", ["read"])
    _, other = new_key(keys, "calm", ["read"])
    with client:
        codes = [client.get("/v1/topics", headers=bearer(token)).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert 429 in codes[3:]
        limited = client.get("/v1/topics", headers=bearer(token))
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/v1/topics", headers=bearer(other)).status_code == 200


def test_an_address_that_keeps_failing_gets_429_and_no_more_lookups(tmp_path: Path) -> None:
    client, keys = build(tmp_path, auth="on", failed_auth_burst=3, failed_auth_per_second=0.01)
    _, cached = new_key(keys, "in use", ["read"])
    _, fresh = new_key(keys, "not used yet", ["read"])
    finds: list[str] = []
    find = keys.store.find

    def counting(key_id: str) -> object:
        finds.append(key_id)
        return find(key_id)

    keys.store.find = counting  # type: ignore[method-assign]
    with client:
        assert client.get("/v1/topics", headers=bearer(cached)).status_code == 200
        unknown = [f"lt_{os.urandom(6).hex()}_{'s' * 43}" for _ in range(5)]
        codes = [client.get("/v1/topics", headers=bearer(t)).status_code for t in unknown]
        assert codes == [401, 401, 401, 429, 429]
        assert len(finds) == 1 + 3, "an address over its failure budget costs no lookup"
        refused = client.get("/v1/topics", headers=bearer("garbage"))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
        # A key already verified still works from that address; a lookup waits.
        assert client.get("/v1/topics", headers=bearer(cached)).status_code == 200
        assert client.get("/v1/topics", headers=bearer(fresh)).status_code == 429
        assert len(finds) == 4
        # Past the key cache's lifetime, a key verified before is refreshed, not refused.
        for entry in list(keys._known._entries):
            at, key, secret_hash = keys._known._entries[entry]
            keys._known._entries[entry] = (at - 3600, key, secret_hash)
        assert client.get("/v1/topics", headers=bearer(cached)).status_code == 200
    other = TestClient(client.app, client=("198.51.100.7", 40000))
    assert other.get("/v1/topics", headers=bearer(fresh)).status_code == 200


def test_malformed_keys_never_reach_the_key_table(tmp_path: Path) -> None:
    client, keys = build(tmp_path, auth="on", failed_auth_per_second=0)
    finds: list[str] = []
    keys.store.find = finds.append  # type: ignore[method-assign, assignment]
    with client:
        for token in ("x", "lt_abc_def", f"lt_{'g' * 12}_{'s' * 43}", "lt_" + "a" * 5000):
            assert client.get("/v1/topics", headers=bearer(token)).status_code == 401
    assert finds == []


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_metrics_answer_loopback_peers_without_a_key(tmp_path: Path, address: str) -> None:
    client, _ = build(tmp_path, auth="on")
    local = TestClient(client.app, client=(address, 40000))
    answer = local.get("/metrics")
    assert answer.status_code == 200
    assert b"latam_http_requests_total" in answer.content


def test_metrics_off_loopback_need_an_admin_key(tmp_path: Path) -> None:
    client, keys = build(tmp_path, auth="on")
    _, reader = new_key(keys, "reader", ["read"])
    _, admin = new_key(keys, "admin", ["admin"])
    remote = TestClient(client.app, client=("198.51.100.7", 40000))
    assert remote.get("/metrics").status_code == 401
    assert remote.get("/metrics", headers=bearer(reader)).status_code == 403
    answer = remote.get("/metrics", headers=bearer(admin))
    assert answer.status_code == 200
    assert b"latam_http_requests_total" in answer.content


def test_metrics_move_to_their_own_port(tmp_path: Path) -> None:
    from latam.process.lifecycle import serve_metrics
    from tests.support import free_port

    client, _ = build(tmp_path, auth="off", metrics_port=free_port())
    with client:
        assert client.get("/metrics").status_code == 404
    port = free_port()
    serve_metrics("127.0.0.1", port, "API")
    import httpx

    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert answer.status_code == 200
    assert b"latam_" in answer.content
    assert httpx.get(f"http://127.0.0.1:{port}/v1/topics", timeout=5).status_code == 404


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
    with TestClient(create_app(service, settings, build_keys(settings, service.store))) as client:
        assert (
            client.post("/v1/topics", json={"name": "a"}, headers=bearer(token)).status_code == 201
        )
        assert client.get("/v1/topics", headers=bearer("b" * 39)).status_code == 401
    with pytest.raises(ValueError, match="32"):
        Settings(bootstrap_api_key="short")  # type: ignore[arg-type]


def latam_keys(data_dir: Path, *args: str) -> tuple[int, str, str]:
    """``latam keys ARGS`` on a SQLite store in ``data_dir``, whatever LATAM_* is set here."""
    env: dict[str, str | None] = {name: None for name in os.environ if name.startswith("LATAM_")}
    env["LATAM_DATA_DIR"] = str(data_dir)
    result = CliRunner(env=env).invoke(main, ["keys", *args])
    return result.exit_code, result.stdout, result.stderr


def test_keys_command_on_a_fresh_data_dir_says_run_migrate(tmp_path: Path) -> None:
    code, out, err = latam_keys(tmp_path, "create", "--name", "x", "--scope", "read")
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "run latam migrate" in err
    assert "revision none" in err
    code, out, err = latam_keys(tmp_path, "list")
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert "run latam migrate" in err


def test_keys_command_creates_lists_and_revokes(tmp_path: Path) -> None:
    store = build_store(Settings(data_dir=tmp_path))
    migrate.upgrade(store.engine)
    store.close()
    code, out, _ = latam_keys(tmp_path, "create", "--name", "ci", "--scope", "read", "--topic", "7")
    assert code == 0
    created = orjson.loads(out)
    assert created["api_key"].startswith(f"lt_{created['key_id']}_")
    assert (created["scopes"], created["topics"], created["revoked"]) == (["read"], [7], False)
    code, out, _ = latam_keys(tmp_path, "list")
    assert code == 0
    assert [orjson.loads(line)["key_id"] for line in out.splitlines()] == [created["key_id"]]
    assert "api_key" not in out
    code, out, _ = latam_keys(tmp_path, "revoke", created["key_id"])
    assert (code, orjson.loads(out)["revoked"]) == (0, True)
    code, out, err = latam_keys(tmp_path, "revoke", "000000000000")
    assert (code, out) == (1, "")
    assert err == "latam: error: API key '000000000000' does not exist\n"


@pytest.mark.parametrize("kind", STORES)
def test_the_sql_key_store_on_every_database(kind: str, tmp_path: Path) -> None:
    with temporary_database(kind, tmp_path) as url:
        engine = build_engine(url, Settings(data_dir=tmp_path))
        try:
            store = SqlKeyStore(engine)
            with pytest.raises(SchemaNotCurrent, match="run latam migrate"):
                store.list()
            migrate.upgrade(engine)
            key, token = create_key(store, name="n", scopes=["read", "admin"], topics=[2, 10])
            assert (key.scopes, key.topics) == (frozenset({"read", "admin"}), frozenset({2, 10}))
            found = store.find(key.key_id)
            assert found is not None
            assert found[0] == key
            assert found[1] != token.split("_", 2)[2]
            assert store.find("000000000000") is None
            with pytest.raises(NotFound):
                store.get("000000000000")
            store.touch(key.id, key.created_at)
            assert store.get(key.key_id).last_used_at == key.created_at
            revoked = store.revoke(key.key_id)
            assert revoked.revoked_at is not None
            assert store.revoke(key.key_id).revoked_at == revoked.revoked_at
            assert [k.key_id for k in store.list()] == [key.key_id]
            assert KeyVerifier(store).verify(token) is None
        finally:
            engine.dispose()
