"""Which `Host` headers an unauthenticated server answers (DNS rebinding protection).

A web page on `http://evil.example:8000` can make its name resolve to 127.0.0.1 (DNS
rebinding); the browser then sends `Host: evil.example:8000` and a matching `Origin` to the
loopback service and reads the answers as same-origin. Only a domain name can be rebound: a
loopback name (`localhost`) or an IP literal means the page's origin is the server itself.
So with no token to protect it, a server answers only those, and the names an operator lists
in LRSEARCH_ALLOWED_HOSTS. No starlette import: the WSGI dashboard uses this too.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

LOOPBACK_NAMES = frozenset({"localhost"})
ALLOWED_HOSTS_SETTING = "LRSEARCH_ALLOWED_HOSTS"


def host_name(header: str) -> str | None:
    """The name in a `Host` header, lower case, without port, brackets or a trailing dot;
    None when the header is not a plain `name[:port]` or `[ipv6][:port]`."""
    text = header.strip().lower()
    port = ""
    if text.startswith("["):
        name, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            return None
        port = port[1:]
        if ":" not in name:  # brackets hold an IPv6 address and nothing else
            return None
    elif text.count(":") == 1:
        name, _, port = text.partition(":")
    elif ":" in text:
        return None
    else:
        name = text
    if port and not port.isdigit():
        return None
    name = name[:-1] if name.endswith(".") else name
    return name or None


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def trusted_host(header: str | None, allowed: Collection[str]) -> bool:
    """Whether a server without authentication may answer a request with this `Host`:
    a loopback name, an IP literal, or a name in `allowed`. No header at all is trusted:
    browsers always send one, so its absence is not a rebinding attack."""
    if header is None:
        return True
    name = host_name(header)
    if name is None:
        return False
    return name in LOOPBACK_NAMES or is_ip_literal(name) or name in allowed


def normalise_allowed(names: Collection[str]) -> frozenset[str]:
    """The allowed names as `trusted_host` compares them (lower case, no trailing dot)."""
    return frozenset(n.strip().lower().removesuffix(".") for n in names if n.strip())


def untrusted_host_detail(header: str) -> str:
    """Why a request was refused, naming its Host and the setting that would admit it."""
    shown = header[:200]
    name = host_name(header) or shown
    return (
        f"untrusted Host header ({shown}): with auth off this server answers only loopback "
        f"names (localhost), IP addresses and the names in {ALLOWED_HOSTS_SETTING}, so a web "
        f"page cannot reach it through a rebound DNS name; if you reach it by this name on "
        f"purpose, set {ALLOWED_HOSTS_SETTING}={name[:200]} (comma-separated) or turn auth on"
    )
