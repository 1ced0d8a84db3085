"""One error hierarchy for the whole service.

::

    LatamError
    ├── TransientError        retry later: store or broker unreachable, timeouts
    │   ├── StoreUnavailable
    │   │   └── SchemaNotCurrent   the store's schema is missing or outdated: run latam migrate
    │   └── BrokerUnavailable
    ├── PermanentError        retrying cannot help: the message goes to dead letters
    │   ├── InvalidMessage    not a JSON object, too large, bad attributes
    │   └── StoreRejected     the database refuses the data itself (a NUL on PostgreSQL…)
    ├── NotFound              a topic, dead letter … does not exist
    ├── Conflict              a unique name is taken
    │   └── IncompatibleSchema   a new schema version would reject data the last one accepted
    ├── InvalidRequest        a request that fails validation outside pydantic
    │   ├── SchemaViolation   published data fails the topic's schema
    │   └── InvalidQuery      a filter, aggregate or cursor of a query that cannot be run (400)
    └── QueryTooExpensive     a read ran past LATAM_QUERY_TIMEOUT_SECONDS or its cost budget
    ConfigError (ValueError)  a setting latam cannot use; raised at start-up, names it

Adapters re-raise vendor exceptions as one of these ``from exc`` so that the API and
the worker decide on types, never on driver details.
"""

from __future__ import annotations


class LatamError(Exception):
    """Base of every error latam raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TransientError(LatamError):
    """A dependency is unavailable; the same operation may succeed later."""

    retry_after_seconds = 5


class StoreUnavailable(TransientError):
    """The SQL store cannot be reached or refused the operation for now."""


class SchemaNotCurrent(StoreUnavailable):
    """The store answers but its schema is not the one this latam expects; the detail
    says which revision it is at and what to run. Safe to show to a client."""


class BrokerUnavailable(TransientError):
    """The broker cannot be reached or did not confirm a publish."""


class PermanentError(LatamError):
    """The input can never be processed; retrying is pointless."""

    reason = "permanent"


class InvalidMessage(PermanentError):
    """A message is malformed: not a JSON object, too large, bad attributes."""

    def __init__(self, detail: str, *, reason: str = "invalid_message") -> None:
        super().__init__(detail)
        self.reason = reason


class StoreRejected(PermanentError):
    """The database refused the data itself: retrying the same write cannot succeed.
    The detail carries the database's message (for logs and dead letters, not clients)."""

    reason = "store_rejected"


class NotFound(LatamError):
    """The requested resource does not exist."""


class Conflict(LatamError):
    """The request conflicts with existing state (a duplicate name)."""


class IncompatibleSchema(Conflict):
    """A schema version refused under ``backward`` compatibility; ``problems`` says why."""

    def __init__(self, detail: str, *, problems: list[str]) -> None:
        super().__init__(detail)
        self.problems = problems


class InvalidRequest(LatamError):
    """A request parameter is invalid (a garbled cursor, an inverted time range)."""

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class SchemaViolation(InvalidRequest):
    """Published data fails the topic's schema: ``errors`` are ``{pointer, message}``
    pairs (RFC 6901 pointers into the request body), ``version`` the schema's."""

    def __init__(self, detail: str, *, errors: list[dict[str, str]], version: int) -> None:
        super().__init__(detail)
        self.errors = errors
        self.version = version


class InvalidQuery(InvalidRequest):
    """A filter, aggregation or cursor the query cannot be run with (an unknown operator,
    a malformed path, a cursor of other filters): a 400 naming the parameter."""


class QueryTooExpensive(LatamError):
    """A read was stopped at the statement timeout (``LATAM_QUERY_TIMEOUT_SECONDS``): the
    same request would be stopped again, so the client must narrow it (422)."""


class ConfigError(ValueError):
    """A setting has a value latam cannot use; the message names the variable."""
