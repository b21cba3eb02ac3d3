"""A limit on failed logins, so that a public --share link cannot be tried password by
password: after a few failures from one address, that address is refused for a while.

It wraps the server as ASGI middleware because Gradio gives an `auth` callable only the
user name and password, never the address the attempt came from.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

MAX_FAILURES = 5  # failed logins in a row from one address before it is refused
LOCKOUT_SECONDS = 300.0  # the first refusal; each further one doubles, up to the cap
MAX_LOCKOUT_SECONDS = 3600.0
_LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1", "localhost")


@dataclass
class _Record:
    failures: int = 0
    lockouts: int = 0
    locked_until: float = 0.0
    last_seen: float = 0.0


def client_address(scope: dict) -> str:
    """Where a request came from. Through the share tunnel every request reaches the server
    from this machine, with the visitor's address as the last X-Forwarded-For entry (the
    one the tunnel itself appended; earlier ones are whatever the visitor sent)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if peer in _LOOPBACK:
        for name, value in scope.get("headers") or []:
            if name == b"x-forwarded-for" and value.strip():
                return value.decode("latin-1").split(",")[-1].strip()
    return peer


class LoginLimit:
    """ASGI middleware counting the answers of Gradio's POST /login per address.

    An attempt counts as a failure from the moment it is sent until it succeeds, so that
    many attempts sent at once cannot slip past the limit while they are being checked.
    """

    def __init__(self, app, max_failures: int = MAX_FAILURES,
                 lockout_seconds: float = LOCKOUT_SECONDS,
                 max_lockout_seconds: float = MAX_LOCKOUT_SECONDS):
        self.app = app
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.max_lockout_seconds = max_lockout_seconds
        self._records: dict[str, _Record] = {}

    async def __call__(self, scope, receive, send):
        if not _is_login(scope):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        self._forget_old(now)
        address = client_address(scope)
        record = self._records.setdefault(address, _Record())
        record.last_seen = now
        if record.locked_until > now:
            await _refuse(send, math.ceil(record.locked_until - now))
            return
        record.failures += 1
        locks = record.failures >= self.max_failures
        if locks:
            record.lockouts += 1
            record.locked_until = now + min(
                self.lockout_seconds * 2 ** (record.lockouts - 1), self.max_lockout_seconds)
        answer = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if answer.get("status") == 200:  # logged in: the count starts again
            self._records.pop(address, None)
        elif answer.get("status") != 400:  # not a wrong password (a malformed form)
            record.failures -= 1
            if locks:
                record.lockouts -= 1
                record.locked_until = 0.0

    def _forget_old(self, now: float) -> None:
        # An address not seen for the longest lockout starts afresh; this keeps the table
        # as small as the set of recent visitors.
        stale = [a for a, r in self._records.items()
                 if r.locked_until <= now and now - r.last_seen > self.max_lockout_seconds]
        for address in stale:
            del self._records[address]


def _is_login(scope: dict) -> bool:
    return (scope["type"] == "http" and scope.get("method") == "POST"
            and scope.get("path", "").rstrip("/").endswith("/login"))


async def _refuse(send, retry_after: int) -> None:
    body = json.dumps({"detail": f"Too many failed logins from this address: try again in "
                                 f"{retry_after} s."}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"),
                            (b"retry-after", str(retry_after).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
