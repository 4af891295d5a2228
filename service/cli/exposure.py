"""The refusal to listen beyond loopback without authentication unless told explicitly
(LRSEARCH_ALLOW_INSECURE=true): a warning in a log is no protection for a public port."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("lrsearch.cli")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXIT_INSECURE = 2  # a usage error: the command line and settings ask for an exposed service


def refuse_insecure_bind(what: str, host: str, *, authenticated: bool, allowed: bool) -> bool:
    """True (after saying why on stderr) when `what` must not start: it would listen on
    `host`, not loopback, with no authentication, and LRSEARCH_ALLOW_INSECURE is not set."""
    if authenticated or host in LOOPBACK:
        return False
    if allowed:
        log.warning(
            "%s listens on %s without authentication (LRSEARCH_ALLOW_INSECURE=true): "
            "anyone who can reach it can use it",
            what,
            host,
        )
        return False
    fix = (
        "set LRSEARCH_AUTH=true (tokens come from `lrsearch token create`), listen on 127.0.0.1"
        if what != "the dashboard"
        else "it has no login: listen on 127.0.0.1 (reach it through a tunnel or a proxy "
        "with a login)"
    )
    print(
        f"error: refusing to start {what} on {host} without authentication: anyone who can "
        f"reach the port could use it. To fix: {fix}, or set LRSEARCH_ALLOW_INSECURE=true to "
        "accept the exposure.",
        file=sys.stderr,
    )
    return True
