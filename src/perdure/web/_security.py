"""Who may use the HTTP API, and where it may listen.

Secure by default: the server binds 127.0.0.1; binding any other address needs a token
(``check_bind``); a token is checked in constant time (``hmac.compare_digest``), so that
its bytes cannot be guessed one at a time from response times. Error texts are scrubbed of
the database password before they leave the process.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qsl, unquote, urlsplit

from .._errors import ConfigurationError
from .._text import REDACTED

#: Hosts that name this machine only.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
#: The shortest token accepted: a short one could be guessed.
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str | None) -> str | None:
    """``token``, refused when it is empty or too short to resist guessing."""
    if token is None:
        return None
    if len(token) < MIN_TOKEN or token.strip() != token:
        raise ConfigurationError(
            f"the API token must be at least {MIN_TOKEN} characters without surrounding "
            "spaces; generate one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    return token


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen on an address other machines can reach without a token."""
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the perdure API on {host!r} without a token: anyone who can "
            "reach it could cancel, resume or start workflows. Pass --token (or set "
            "PERDURE_API_TOKEN), or bind 127.0.0.1"
        )


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a bearer token."""
    if header is None:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))


def secrets_of(url: str) -> list[str]:
    """The passwords in a database URL (its user's, and ``password=`` options)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        found += [v for k, v in parse_qsl(parts.query) if "pass" in k.lower()]
    except ValueError:
        return []
    forms = {form for secret in found for form in (secret, unquote(secret)) if len(form) >= 4}
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` without any of ``secrets``."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
