"""Bounded connections for the service: a flood of idle or slow clients cannot take it down.

uvicorn keeps a connection that never sends a request open for ever (its keep-alive timer
starts only after a first response), so a few thousand idle sockets exhaust the process's file
descriptors and the accept loop fails with EMFILE. uvicorn's ``limit_concurrency`` answers 503
only once a request has arrived, which idle sockets never send. Two guards close that gap, in a
subclass of uvicorn's h11 protocol (uvicorn has no hook for either; a reverse proxy would be the
other answer, but the service must be safe on its own):

- at most ``max_connections`` open at once: a connection beyond that gets an immediate
  ``503`` with ``Retry-After`` and is closed (so its descriptor is freed at once);
- a client has ``header_timeout_s`` to send a complete request head, on a new connection and
  again after each response; one that does not is closed.

The soft limit on open files is also raised to the hard limit at start, and ``max_connections``
is kept below it. asyncio accepts up to ``backlog`` queued connections in one go before any of
them reaches ``connection_made`` (where the excess is shed), so the listen backlog is bounded by
the descriptors left over too (:func:`accept_backlog`): a burst that was queued while the
process was starved of CPU cannot run it out of descriptors either. Should accepting fail
anyway, asyncio pauses it for a second and logs; ``serve`` keeps Hydra's already-open log
handlers for that (uvicorn's own logging set-up closes them, and reopening a log file at that
moment fails for the same lack of descriptors, which used to kill the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 2\r\n"
    b"Connection: close\r\nContent-Length: 60\r\n\r\n"
    b'{"error": "busy: too many open connections; retry shortly"}\n'
)
#: descriptors kept free for everything that is not a client connection (index, model, logs)
RESERVED_FDS = 64


def usable_connections(wanted: int) -> int:
    """``wanted``, lowered to what the open-file limit allows after raising it as far as it goes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    allowed = max(8, soft - RESERVED_FDS)
    if wanted > allowed:
        log.warning(
            "max_connections=%d is over what the open-file limit (%d) allows: using %d",
            wanted,
            soft,
            allowed,
        )
    return min(wanted, allowed)


def accept_backlog(connections: int) -> int:
    """The listen backlog: at most the descriptors the open-file limit leaves beside
    ``connections``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, min(2048, soft - RESERVED_FDS - connections))


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the two guards of the module docstring."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > max_connections:
                transport.write(_BUSY)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_deadline)

        def _head_deadline(self) -> None:
            self._head_timer = None
            waiting_for_head = self.conn.their_state is h11.IDLE and (
                self.cycle is None or self.cycle.response_complete
            )
            if waiting_for_head and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's head has the same time to arrive

        def connection_lost(self, exc: Exception | None) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol
