"""Several messages in one NATS message: how latam publishes to NATS.

Every NATS message costs the server a write, an acknowledgement, a delivery and an ack,
and costs nats-py's Python as much on both sides: one NATS message per latam message
held the NATS pipeline near 13,000 messages/s on two cores. So a publish of several
messages is sent as batches, each one NATS message of up to ``MAX_MEMBERS`` messages and
``max_payload`` bytes:

- header ``Latam-Batch``: how many messages it holds (a plain message has no such
  header, so producers writing straight onto the stream are read as before);
- subject ``<STREAM>._batch.<count>``: the stream's per-subject counts then give the
  number of messages waiting, not of NATS messages (``NatsBroker.backlog``);
- body: for each message, its attributes' length and its body's length (4 bytes each,
  big-endian), then its attributes (a JSON object of strings) and its body.

The worker hands each message of a batch out as a delivery of its own and settles the
NATS message once all of them are settled: acked if every one was stored or set aside,
``nak``ed (all of them come back, and the stored ones are duplicates the store ignores)
if any was handed back.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence

import orjson

from latam.domain import OutboundMessage

BATCH = "Latam-Batch"
SUBJECT_PART = "_batch"  # between the stream and the count in a batch's subject
MAX_MEMBERS = 1000
HEADROOM = 4096  # bytes of max_payload left for the headers
_LENGTHS = struct.Struct(">II")


def subject(stream_subject: str, count: int) -> str:
    return f"{stream_subject}.{SUBJECT_PART}.{count}"


def every_subject(stream_subject: str) -> str:
    """The subjects of every batch, as a NATS wildcard."""
    return f"{stream_subject}.{SUBJECT_PART}.*"


def parse_count(text: str) -> int:
    """A count as a header or a subject writes it (ASCII digits, at most MAX_MEMBERS);
    0, a batch of none, for anything else."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_MEMBERS))):
        return 0
    count = int(text)
    return count if count <= MAX_MEMBERS else 0


def count_of(batch_subject: str) -> int:
    """The message count a batch subject names; 1 for anything else."""
    return parse_count(batch_subject.rpartition(".")[2]) or 1


def chunks(
    messages: Sequence[OutboundMessage], max_bytes: int
) -> Iterator[list[tuple[OutboundMessage, bytes]]]:
    """``messages`` with their frames, in order, grouped into batches of at most
    ``MAX_MEMBERS`` messages and ``max_bytes`` of frames each (a message whose frame
    alone exceeds it is a group of its own)."""
    group: list[tuple[OutboundMessage, bytes]] = []
    size = 0
    for message in messages:
        attributes = orjson.dumps(message.wire_attributes())
        frame = _LENGTHS.pack(len(attributes), len(message.body)) + attributes + message.body
        if group and (size + len(frame) > max_bytes or len(group) == MAX_MEMBERS):
            yield group
            group, size = [], 0
        group.append((message, frame))
        size += len(frame)
    if group:
        yield group


def dedupe_id(member_ids: Sequence[str]) -> str:
    """``Nats-Msg-Id`` of a batch: the same messages published again in the same batch
    (a client's retry) are dropped by JetStream's duplicate window."""
    spelled = "".join(f"{len(member)}:{member}" for member in member_ids)  # unambiguous
    digest = hashlib.sha256(spelled.encode()).hexdigest()
    return f"batch:{digest}"


def unpack(payload: bytes, count: int) -> list[tuple[bytes, bytes]] | None:
    """The (attributes, body) pairs of a batch; None unless it is exactly ``count``
    well-formed frames (a producer that wrote the header by hand)."""
    members: list[tuple[bytes, bytes]] = []
    position, end = 0, len(payload)
    while position < end:
        if position + _LENGTHS.size > end or len(members) == count:
            return None
        attributes_length, body_length = _LENGTHS.unpack_from(payload, position)
        start = position + _LENGTHS.size
        middle = start + attributes_length
        position = middle + body_length
        if position > end:
            return None
        members.append((payload[start:middle], payload[middle:position]))
    return members if len(members) == count else None
