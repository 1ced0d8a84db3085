"""Content negotiation of the export: which format an ``Accept`` header asks for,
under RFC 9110's rules (the most specific matching range decides; ``q=0`` refuses)."""

from __future__ import annotations

from starlette.exceptions import HTTPException

from latam.export import MEDIA_TYPES, Format, parse_format

ACCEPTED = {media.split(";")[0]: name for name, media in MEDIA_TYPES.items()}


def _ranges(accept: str) -> list[tuple[str, float]]:
    """The Accept header's media ranges with their quality (lower-cased; a range whose
    ``q`` is not a number from 0 to 1 counts as refused)."""
    ranges = []
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
                if not 0.0 <= quality <= 1.0:  # also NaN
                    quality = 0.0
        if media:
            ranges.append((media.lower(), quality))
    return ranges


def _quality(media: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """``media``'s quality from its most specific matching range (``type/sub`` over
    ``type/*`` over ``*/*``, RFC 9110 12.5.1), and that specificity (0 when none)."""
    kind = media.split("/")[0]
    found: tuple[float, int] = (0.0, 0)
    for pattern, quality in ranges:
        specificity = {media: 3, f"{kind}/*": 2, "*/*": 1}.get(pattern, 0)
        if specificity > found[1]:
            found = (quality, specificity)
    return found


def negotiate(query: str | None, accept: str | None) -> Format:
    """``format=`` when given, else the Accept header's preferred type: the highest
    quality, an explicit type before a wildcard, then NDJSON, CSV, Parquet. A type
    refused by name (``text/csv;q=0``) is never chosen through a wildcard."""
    if query is not None:
        return parse_format(query)
    ranges = _ranges(accept or "*/*")
    best: tuple[float, int, int] | None = None
    choice: Format | None = None
    for order, (media, name) in enumerate(ACCEPTED.items()):
        quality, specificity = _quality(media, ranges)
        rank = (quality, specificity, -order)
        if quality > 0 and (best is None or rank > best):
            best, choice = rank, name
    if choice is None:
        raise HTTPException(406, f"export answers {', '.join(ACCEPTED)}; or pass format=")
    return choice
