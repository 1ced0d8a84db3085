"""Dead letters: list, inspect, replay and purge messages the worker set aside."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from latam.api.deps import ServiceDep, authorize
from latam.api.problems import documented
from latam.api.render import OrjsonResponse, dead_letter_json
from latam.api.schemas import DeadLetterList, DeadLetterOut, Purged, Replayed, ReplayIn
from latam.broker.base import letter_bytes

router = APIRouter(
    prefix="/v1/dead-letters",
    tags=["dead letters"],
    dependencies=[Depends(authorize("admin", "admin"))],
)


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
) -> Response:
    """Dead letters, oldest first, with the reason each was set aside."""
    letters = service.list_dead_letters(limit=limit, cursor=cursor)
    weight = sum(letter_bytes(d.body, d.attributes) for d in letters)
    full = len(letters) == limit or weight >= service.max_page_bytes
    next_cursor = letters[-1].id if letters and full else None
    return OrjsonResponse(
        {"data": [dead_letter_json(d) for d in letters], "next_cursor": next_cursor}
    )


@router.get("/{dead_letter_id}", response_model=DeadLetterOut, responses=documented(404))
def get_dead_letter(dead_letter_id: str, service: ServiceDep) -> Response:
    return OrjsonResponse(dead_letter_json(service.get_dead_letter(dead_letter_id=dead_letter_id)))


@router.post("/replay")
def replay_dead_letters(service: ServiceDep, body: ReplayIn | None = None) -> Replayed:
    """Send dead letters back to the broker (all of them when no ids are given)."""
    ids = body.ids if body else None
    return Replayed(replayed=service.replay_dead_letters(ids=ids))


@router.post("/{dead_letter_id}/replay", responses=documented(404))
def replay_dead_letter(dead_letter_id: str, service: ServiceDep) -> Replayed:
    service.get_dead_letter(dead_letter_id=dead_letter_id)
    return Replayed(replayed=service.replay_dead_letters(ids=[dead_letter_id]))


@router.delete("/{dead_letter_id}", responses=documented(404))
def purge_dead_letter(dead_letter_id: str, service: ServiceDep) -> Purged:
    service.get_dead_letter(dead_letter_id=dead_letter_id)
    return Purged(purged=service.purge_dead_letters(ids=[dead_letter_id]))


@router.delete("")
def purge_dead_letters(service: ServiceDep, body: ReplayIn | None = None) -> Purged:
    """Delete dead letters for good (all of them when no ids are given)."""
    ids = body.ids if body else None
    return Purged(purged=service.purge_dead_letters(ids=ids))
