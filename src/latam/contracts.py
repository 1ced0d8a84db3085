"""Data contracts per topic: versions kept in the store, enforced at the door and by ingest.

``Contracts`` is shared by the API (publishing: 422 with pointers) and ingest (a direct
producer's message that fails becomes a ``schema_violation`` dead letter). Each version
is compiled once per process; which version a topic enforces is re-read from the store
at most every ``ttl`` seconds, so a change reaches every process within that time (the
process that made it at once). While the store is down the last answer stands.

A message published through the API carries, on the wire, the version it was validated
against, and ingest checks it again against that version: a schema changed between the
202 and the store (even to a stricter one, with compatibility ``none``) never refuses
data the API accepted. A message without it, or naming a version the topic never had,
is checked against the version the topic enforces. (A producer with access to the
broker could name an older version of the topic's schema; it cannot name any other.)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from latam.domain import dumps_exact
from latam.errors import IncompatibleSchema, InvalidRequest, NotFound, StoreUnavailable
from latam.jsonschemas import (
    COMPATIBILITY,
    MAX_VIOLATIONS,
    Schema,
    Violation,
    backward_problems,
    compile_schema,
    load_schema,
)
from latam.storage.port import SchemaVersion, Store

MAX_COMPILED = 1024  # schema versions kept compiled per process


@dataclass
class Checked:
    """What ``Contracts.check`` found: the version enforced (None: none), how many items
    fail it, and the first ``MAX_VIOLATIONS`` failures."""

    version: int | None
    failing: int = 0
    violations: list[Violation] = field(default_factory=list)


@dataclass
class Contracts:
    """The schemas topics enforce, compiled, with a short-lived cache of which one."""

    store: Store
    ttl: float = 1.0
    _enforced: dict[int, tuple[float, int | None]] = field(default_factory=dict, repr=False)
    _compiled: OrderedDict[tuple[int, int], Schema] = field(default_factory=OrderedDict, repr=False)
    # Versions found missing, until when: a producer naming one that does not exist
    # costs one lookup per ``ttl``, not one per message.
    _missing: dict[tuple[int, int], float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- enforcing ---------------------------------------------------------------------
    def enforced(self, topic_ids: Sequence[int]) -> dict[int, tuple[int, Schema]]:
        """The version and compiled schema each of these topics enforces (those without
        one are left out)."""
        now = time.monotonic()
        with self._lock:
            stale = [t for t in set(topic_ids) if self._enforced.get(t, (0.0, None))[0] <= now]
        if stale:
            self._refresh(stale, now)
        found: dict[int, tuple[int, Schema]] = {}
        for topic_id in topic_ids:
            version = self._enforced.get(topic_id, (0.0, None))[1]
            if version is not None and (schema := self.compiled(topic_id, version)) is not None:
                found[topic_id] = (version, schema)
        return found

    def _refresh(self, topic_ids: list[int], now: float) -> None:
        try:
            versions = self.store.enforced_schemas(topic_ids)
        except StoreUnavailable:
            if all(t in self._enforced for t in topic_ids):
                return  # the last answer stands until the store is back
            raise
        with self._lock:
            for topic_id in topic_ids:
                found = versions.get(topic_id)
                if found is not None:
                    self._remember(found)
                self._enforced[topic_id] = (now + self.ttl, found.version if found else None)

    def compiled(self, topic_id: int, version: int) -> Schema | None:
        """Version ``version`` of the topic's schema compiled; None if it does not exist."""
        key, now = (topic_id, version), time.monotonic()
        with self._lock:
            schema = self._compiled.get(key)
            if schema is not None:
                self._compiled.move_to_end(key)
                return schema
            if self._missing.get(key, 0.0) > now:
                return None
        try:
            stored = self.store.schema_version(topic_id, version)
        except NotFound:
            with self._lock:
                if len(self._missing) >= MAX_COMPILED:
                    self._missing.clear()  # only misses: at worst, looked up again
                self._missing[key] = now + self.ttl
            return None
        with self._lock:
            return self._remember(stored)

    def _remember(self, stored: SchemaVersion) -> Schema:
        key = (stored.topic_id, stored.version)
        schema = self._compiled.get(key)
        if schema is None:
            schema = self._compiled[key] = load_schema(stored.schema)
            while len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
        return schema

    def forget(self, topic_id: int) -> None:
        """Read the topic's enforced version again on next use (after a change here)."""
        with self._lock:
            self._enforced.pop(topic_id, None)

    def check(self, topic_id: int, items: Sequence[object], at: Callable[[int], str]) -> Checked:
        """``items`` (message data) against the schema ``topic_id`` enforces; the
        failures of item ``i`` are at pointers under ``at(i)``."""
        found = self.enforced([topic_id]).get(topic_id)
        if found is None:
            return Checked(None)
        version, schema = found
        checked = Checked(version)
        for i, data in enumerate(items):
            if _is_valid(schema, data):
                continue
            checked.failing += 1
            room = MAX_VIOLATIONS - len(checked.violations)
            if room > 0:
                checked.violations.extend(schema.violations(_plain(data), at(i), room))
        return checked

    # -- managing ----------------------------------------------------------------------
    def put(self, topic_id: int, document: object, compatibility: str) -> SchemaVersion:
        """Add a version and enforce it; ``IncompatibleSchema`` when ``backward`` is asked
        and it would reject data valid under the latest version."""
        if compatibility not in COMPATIBILITY:
            raise InvalidRequest(
                f"compatibility must be one of {', '.join(COMPATIBILITY)}", field="compatibility"
            )
        schema = compile_schema(document)
        versions = self.store.schema_versions(topic_id)
        latest = versions[-1] if versions else None
        if latest is not None and compatibility == "backward":
            problems = backward_problems(orjson.loads(latest.schema), schema.document)
            if problems:
                raise IncompatibleSchema(
                    f"the schema would reject data valid under version {latest.version}",
                    problems=problems,
                )
        if latest is not None and latest.schema == schema.text and latest.current:
            return latest  # the same schema again: nothing to change
        added = self.store.add_schema(
            topic_id,
            version=(latest.version if latest else 0) + 1,
            schema=schema.text,
            compatibility=compatibility,
        )
        self.forget(topic_id)
        return added

    def drop(self, topic_id: int) -> None:
        self.store.drop_schema(topic_id)
        self.forget(topic_id)

    def current(self, topic_id: int) -> SchemaVersion:
        """The version the topic enforces; NotFound when it enforces none."""
        found = self.store.enforced_schemas([topic_id]).get(topic_id)
        if found is None:
            self.store.get_topic(topic_id)
            raise NotFound(f"topic {topic_id} enforces no schema")
        return found


def _is_valid(schema: Schema, data: object) -> bool:
    try:
        return schema.is_valid(data)
    except (TypeError, ValueError):  # a number only simplejson could read (Decimal)
        return schema.is_valid(_plain(data))


def _plain(data: object) -> Any:
    """``data`` with exact numbers (``domain.loads_exact``) as the doubles a validator reads."""
    return orjson.loads(dumps_exact(data))
