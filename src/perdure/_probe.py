"""Probes: checks of a network condition that gate a step's retries (``Retry(wait_for=...)``).

A probe is any callable: it passes when it returns something truthy, and fails when
it returns something falsy or raises. ``http`` and ``tcp`` build the common ones on
the standard library alone. A probe runs in a worker thread (also for async
workflows), so it may block; give it a timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Callable, Coroutine
from typing import Any


class Probe:
    """A named check: calling it returns True when the condition holds (the service is
    up) and raises or returns False when it does not. Its name appears in logs and in
    ``status().waiting_for``."""

    def __init__(self, check: Callable[[], object], name: str) -> None:
        self._check = check
        self.name = name

    def __call__(self) -> bool:
        """Run the check once."""
        return bool(self._check())

    def __repr__(self) -> str:
        return self.name


def http(url: str, *, timeout: float = 5.0, method: str = "GET") -> Probe:
    """A probe that passes when ``url`` answers a ``method`` request with a 2xx or 3xx
    status within ``timeout`` seconds (redirects are not followed). Proxies come from
    the environment, as for ``urllib``."""
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"probes.http needs an http:// or https:// URL, not {url!r}")
    # Imported here: urllib.request (with http.client and email) is a fifth of a worker's
    # start-up imports, and few apps probe over HTTP.
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        # A redirect already says the server answers: don't follow it somewhere else.
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)

    def check() -> bool:
        request = urllib.request.Request(url, method=method)
        try:
            with opener.open(request, timeout=timeout) as response:
                status: int = response.status
        except urllib.error.HTTPError as exc:
            exc.close()
            if 300 <= exc.code < 400:
                return True
            raise
        return 200 <= status < 400

    return Probe(check, f"http {method} {url}")


def tcp(host: str, port: int, *, timeout: float = 5.0) -> Probe:
    """A probe that passes when a TCP connection to ``host:port`` opens within
    ``timeout`` seconds (it is closed at once)."""

    def check() -> bool:
        with socket.create_connection((host, port), timeout=timeout):
            return True

    return Probe(check, f"tcp {host}:{port}")


def probe_name(probe: Callable[[], object]) -> str:
    """What logs and statuses call ``probe``."""
    if isinstance(probe, Probe):
        return probe.name
    name = getattr(probe, "__qualname__", None) or getattr(probe, "__name__", None)
    return str(name) if name else repr(probe)


async def _awaited(awaitable: Any) -> object:
    return await awaitable


def run_probe(probe: Callable[[], object]) -> tuple[bool, str]:
    """Run ``probe`` once (an async one in its own event loop): ``(passed, why not)``."""
    try:
        result = probe()
        if inspect.isawaitable(result):
            coroutine: Coroutine[Any, Any, object] = _awaited(result)
            result = asyncio.run(coroutine)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return (True, "") if result else (False, f"returned {result!r}")
