"""A real HTTP server for the examples: uvicorn on 127.0.0.1, in a thread of this process."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn


def _bound_socket(port: int) -> socket.socket:
    """A TCP socket bound to ``127.0.0.1:port`` (0: any free port) but not listening: it
    holds the port, and connecting to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The port may still have connections in TIME_WAIT from the previous server.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class LocalServer:
    """An ASGI app (FastAPI) served by uvicorn on a free port of 127.0.0.1.

    ``start()`` and ``stop()`` may alternate: the port is kept while the server is down,
    so clients see the same URL, and their connections are refused meanwhile, just as
    when a real service is down. Use it as a context manager (started on entry, closed
    on exit, also on error).
    """

    def __init__(self, app: Any, name: str = "server") -> None:
        self.app = app
        self.name = name
        self._socket = _bound_socket(0)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, timeout: float = 10.0) -> None:
        """Serve, and return once the server accepts connections."""
        if self._server is not None:
            return
        config = uvicorn.Config(
            self.app,
            log_config=None,  # leave the process's logging alone
            access_log=False,
            ws="none",
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, name=self.name, daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout)
                raise RuntimeError(f"{self.name} did not start on {self.url}")
            time.sleep(0.01)
        self._server, self._thread = server, thread

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (requests in progress get a few seconds to finish); the port stays
        reserved, so connections are refused until ``start()``."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.should_exit = True
        thread.join(timeout)
        # uvicorn closed the listening socket; take the port again at once.
        self._socket = _bound_socket(self.port)

    def close(self) -> None:
        """Stop, and give the port back."""
        self.stop()
        self._socket.close()

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
