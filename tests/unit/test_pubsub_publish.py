"""Pub/Sub errors that retrying cannot fix are the request's fault (422), not the
broker's (503 "retry later" forever)."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions as google_errors

from latam.broker.pubsub import publish
from latam.errors import BrokerUnavailable, InvalidMessage


def refuse(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Publish RPC answers with ``error``, as Pub/Sub does for such a request."""

    def rpc(_publisher: Any, **_kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(publish.GapicPublisher, "publish", rpc)


WIRE = [{"data": b"{}", "attributes": {"topic": "t"}}]


def test_invalid_argument_is_a_permanent_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    refuse(google_errors.InvalidArgument("attribute value too long"), monkeypatch)
    with pytest.raises(InvalidMessage) as caught:
        publish.publish_rpc(object(), "projects/p/topics/t", WIRE, (1000, 1_000_000))
    assert caught.value.reason == "broker_rejected"
    assert "attribute value too long" in caught.value.detail


@pytest.mark.parametrize(
    "error", [google_errors.ServiceUnavailable("down"), google_errors.DeadlineExceeded("slow")]
)
def test_outages_stay_transient(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    refuse(error, monkeypatch)
    with pytest.raises(BrokerUnavailable):
        publish.publish_rpc(object(), "projects/p/topics/t", WIRE, (1000, 1_000_000))
