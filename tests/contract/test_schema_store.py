"""Data contracts on every store (and the fake): versions kept in order, one enforced at a
time, a concurrent second writer of a version refused, topics' deletion taking them along,
and the service's checks (``Contracts``) reading them."""

from __future__ import annotations

import orjson
import pytest

from latam.contracts import Contracts
from latam.domain import NewMessage
from latam.errors import Conflict, IncompatibleSchema, InvalidRequest, NotFound
from latam.ingest import Ingest
from latam.jsonschemas import parse_violation
from tests.contract.conftest import AnyStore

SCHEMA = {"type": "object", "required": ["flight"], "properties": {"flight": {"type": "string"}}}


def test_versions_and_the_enforced_one(store: AnyStore) -> None:
    topic = store.create_topic("flights").id
    other = store.create_topic("crews").id
    text = orjson.dumps(SCHEMA).decode()
    assert store.schema_versions(topic) == []
    assert store.enforced_schemas([topic, other]) == {}
    first = store.add_schema(topic, version=1, schema=text, compatibility="backward")
    assert (first.version, first.current) == (1, True)
    store.add_schema(topic, version=2, schema="true", compatibility="none")
    with pytest.raises(Conflict):
        store.add_schema(topic, version=2, schema="{}", compatibility="none")
    versions = store.schema_versions(topic)
    assert [(v.version, v.current, v.compatibility) for v in versions] == [
        (1, False, "backward"),
        (2, True, "none"),
    ]
    assert versions[0].schema == text
    assert store.schema_version(topic, 1).schema == text
    assert {t: v.version for t, v in store.enforced_schemas([topic, other]).items()} == {topic: 2}
    store.drop_schema(topic)
    assert store.enforced_schemas([topic]) == {}
    assert len(store.schema_versions(topic)) == 2
    with pytest.raises(NotFound):
        store.schema_version(topic, 3)
    for call in (
        lambda: store.add_schema(999_999, version=1, schema="{}", compatibility="none"),
        lambda: store.drop_schema(999_999),
        lambda: store.schema_versions(999_999),
        lambda: store.schema_version(999_999, 1),
    ):
        with pytest.raises(NotFound):
            call()
    store.delete_topic(topic)
    again = store.create_topic("flights").id
    assert store.schema_versions(again) == []


def test_contracts_enforce_and_ingest_sets_aside(store: AnyStore) -> None:
    topic = store.create_topic("flights").id
    contracts = Contracts(store, ttl=0.0)
    with pytest.raises(InvalidRequest):
        contracts.put(topic, {"type": "objekt"}, "backward")
    with pytest.raises(InvalidRequest):
        contracts.put(topic, SCHEMA, "forward")
    assert contracts.put(topic, SCHEMA, "backward").version == 1
    with pytest.raises(IncompatibleSchema) as refused:
        contracts.put(topic, {**SCHEMA, "required": ["flight", "gate"]}, "backward")
    assert refused.value.problems == ["/: new required field(s) gate"]
    checked = contracts.check(topic, [{"flight": 1}, {"flight": "LA1"}], lambda i: f"/m/{i}")
    assert (checked.version, checked.failing) == (1, 1)
    assert [v.pointer for v in checked.violations] == ["/m/0/flight"]
    ingest = Ingest(store, 1 << 18, contracts)
    batch = [
        ("good", NewMessage("flights", "m1", '{"flight":"LA800"}')),
        ("bad", NewMessage("flights", "m2", '{"flight":800}')),
        ("api", NewMessage("flights", "m3", '{"free":1}', schema_version=0)),
    ]
    outcome = ingest.store_batch(batch)
    assert sorted(outcome.stored) == ["api", "good"]
    [(key, why)] = outcome.aside
    assert (key, why.label) == ("bad", "schema_violation")
    assert parse_violation(why.reason) == (
        1,
        [{"pointer": "/flight", "message": '800 is not of type "string"'}],
    )
    stored = {m.message_id: m for m in store.list_messages(topic, limit=10)}
    assert stored["m1"].schema_version == 1
    assert stored["m3"].schema_version is None
