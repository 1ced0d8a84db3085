"""Dead letters: list, inspect, replay and purge messages the worker set aside."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from latam.api.deps import ServiceDep, as_utc, audit, authorize
from latam.api.problems import documented
from latam.api.render import OrjsonResponse, dead_letter_json
from latam.api.schemas import (
    CorrectedIn,
    DeadLetterList,
    DeadLetterOut,
    DeadLetterSummary,
    Purged,
    Replayed,
    ReplayIn,
)
from latam.domain import MAX_TOPIC_NAME
from latam.errors import InvalidRequest
from latam.service import LetterFilter

router = APIRouter(
    prefix="/v1/dead-letters",
    tags=["dead letters"],
    dependencies=[Depends(authorize("admin", "admin"))],
)


def _where(
    topic: str | None, reason: str | None, since: datetime | None, until: datetime | None
) -> LetterFilter:
    if since is not None and until is not None and since > until:
        raise InvalidRequest("since must not be after until", field="since")
    return LetterFilter(topic, reason, as_utc(since), as_utc(until))


TopicName = Annotated[
    str | None, Query(min_length=1, max_length=MAX_TOPIC_NAME, description="Topic name.")
]
Reason = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        description="The reason's name, without its detail: `schema_violation`,"
        " `max_attempts`, `unknown_topic`, `invalid_json` …",
    ),
]
Since = Annotated[datetime | None, Query(description="dead-lettered at or after")]
Until = Annotated[datetime | None, Query(description="dead-lettered before")]


@router.get("", response_model=DeadLetterList)
def list_dead_letters(
    service: ServiceDep,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=1000,
            description="Letters at most; a page also stops after the letter that brings its"
            " bodies and attributes to LATAM_MAX_PAGE_BYTES (4 MiB by default).",
        ),
    ] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    topic: TopicName = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
) -> Response:
    """Dead letters, oldest first, with the reason each was set aside.

    With `topic`, `reason`, `since` or `until`, only the letters that match: a request
    walks at most 10,000 letters, so a filter that matches few may answer a short or
    empty page whose `next_cursor` goes on from where it stopped (null at the end)."""
    page = service.list_dead_letters(
        limit=limit, cursor=cursor, where=_where(topic, reason, since, until)
    )
    return OrjsonResponse(
        {"data": [dead_letter_json(d) for d in page.items], "next_cursor": page.next_cursor}
    )


@router.get("/summary", response_model=DeadLetterSummary)
def summarize_dead_letters(
    service: ServiceDep,
    topic: TopicName = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
) -> DeadLetterSummary:
    """Dead letters counted by reason and by topic (over at most 100,000 letters:
    `complete` says whether every one was counted)."""
    found = service.dead_letter_summary(where=_where(topic, reason, since, until))
    return DeadLetterSummary(
        total=found.total,
        by_reason=found.by_reason,
        by_topic=found.by_topic,
        complete=found.complete,
    )


@router.get("/{dead_letter_id}", response_model=DeadLetterOut, responses=documented(404))
def get_dead_letter(dead_letter_id: str, service: ServiceDep) -> Response:
    return OrjsonResponse(dead_letter_json(service.get_dead_letter(dead_letter_id=dead_letter_id)))


@router.post("/replay", response_model_exclude_none=True)
def replay_dead_letters(
    request: Request, service: ServiceDep, body: ReplayIn | None = None
) -> Replayed:
    """Send dead letters back to the broker (all of them when no ids are given)."""
    ids = body.ids if body else None
    replayed = service.replay_dead_letters(ids=ids)
    audit(request, "dead letters replayed", ids=ids, count=replayed)
    return Replayed(replayed=replayed)


@router.post(
    "/{dead_letter_id}/replay",
    responses=documented(404, 409, 422),
    response_model_exclude_none=True,
)
def replay_dead_letter(
    dead_letter_id: str,
    request: Request,
    service: ServiceDep,
    body: CorrectedIn | None = None,
) -> Replayed:
    """Send one dead letter back to the broker; with `data` and/or `attributes`, as
    corrected (fix and replay). A correction is checked as a publish is, the topic's
    schema included (422 with pointers at `/data/…`); the letter is deleted once the
    corrected message is on the broker, under the same topic and message id."""
    if body is None or (body.data is None and body.attributes is None):
        service.get_dead_letter(dead_letter_id=dead_letter_id)
        replayed = service.replay_dead_letters(ids=[dead_letter_id])
        audit(request, "dead letters replayed", ids=[dead_letter_id], count=replayed)
        return Replayed(replayed=replayed)
    message_id = service.replay_corrected(
        dead_letter_id=dead_letter_id, data=body.data, attributes=body.attributes
    )
    audit(
        request, "dead letter corrected and replayed", ids=[dead_letter_id], message_id=message_id
    )
    return Replayed(replayed=1, message_id=message_id)


@router.delete("/{dead_letter_id}", responses=documented(404))
def purge_dead_letter(dead_letter_id: str, request: Request, service: ServiceDep) -> Purged:
    service.get_dead_letter(dead_letter_id=dead_letter_id)
    purged = service.purge_dead_letters(ids=[dead_letter_id])
    audit(request, "dead letters purged", ids=[dead_letter_id], count=purged)
    return Purged(purged=purged)


@router.delete("")
def purge_dead_letters(
    request: Request, service: ServiceDep, body: ReplayIn | None = None
) -> Purged:
    """Delete dead letters for good (all of them when no ids are given)."""
    ids = body.ids if body else None
    purged = service.purge_dead_letters(ids=ids)
    audit(request, "dead letters purged", ids=ids, count=purged)
    return Purged(purged=purged)
