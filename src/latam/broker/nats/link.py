"""A synchronous handle on an asyncio NATS connection run in a private loop thread.

``nats-py`` is asyncio-only while the broker port is synchronous; every call is sent to
the loop with ``asyncio.run_coroutine_threadsafe`` and waited for with a timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
from nats.errors import Error as NatsError
from nats.js.errors import Error as JetStreamError

from latam.errors import BrokerUnavailable

T = TypeVar("T")
CALL_TIMEOUT_SECONDS = 30.0  # bound on one round trip through the loop


class NatsLink:
    """One NATS connection and JetStream context living on a background event loop."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._nc: Any = None
        self.js: Any = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_SECONDS) -> T:
        """Run ``coro`` on the loop; NATS errors and timeouts become BrokerUnavailable."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except (NatsError, JetStreamError, TimeoutError, OSError) as exc:
            future.cancel()
            raise BrokerUnavailable(f"NATS call failed: {type(exc).__name__}") from exc

    async def connect(self) -> Any:
        """The JetStream context, connecting first if needed."""
        if self._nc is None or self._nc.is_closed:
            self._nc = await nats.connect(
                self.server,
                connect_timeout=5,
                reconnect_time_wait=0.5,
                max_reconnect_attempts=-1,  # a restarted server is found again
                allow_reconnect=True,
            )
            self.js = self._nc.jetstream(timeout=10)
        return self.js

    @property
    def max_payload(self) -> int:
        """The largest message the connected server accepts (its INFO)."""
        return int(self._nc.max_payload)

    async def flush(self, timeout: float) -> None:
        """Wait until the server has processed everything sent on the connection."""
        await self.connect()
        await self._nc.flush(timeout=timeout)

    def close(self) -> None:
        async def _close() -> None:
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.close()

        try:
            self.run(_close(), timeout=10)
        except BrokerUnavailable:
            pass  # already gone; nothing left to flush
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self.loop.close()
