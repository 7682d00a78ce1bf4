"""Talking to workflows from outside: ``send`` messages to them, ``get_event`` from them.

A message is stored (in order, per workflow and topic) until the workflow's
``perdure.recv`` takes it; a workflow suspended on that topic wakes at once. An
event is the latest value a workflow published with ``perdure.set_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from ._engine.messages import send_from_workflow, send_from_workflow_async
from ._engine.state import current_run
from ._errors import WorkflowFinishedError, WorkflowNotFoundError
from .storage import EVENT_EVENT

if TYPE_CHECKING:
    from ._app import App


class Talking:
    """The ``send`` and ``get_event`` methods of ``App`` (a mixin)."""

    def _send(
        self, workflow_id: str, message: Any, topic: str | None, idempotency_key: str | None
    ) -> Future[bool | None]:
        app: App = self  # type: ignore[assignment]
        payload = app.serializer.dumps(message, Any)
        return app.store.send_message(
            workflow_id, "" if topic is None else topic, payload, idempotency_key, app.clock.time()
        )

    def _sent(self, workflow_id: str, stored: bool | None) -> None:
        if stored is None:
            app: App = self  # type: ignore[assignment]
            record = app.store.get_workflow(workflow_id)
            if record is None:
                raise WorkflowNotFoundError(workflow_id)
            raise WorkflowFinishedError(workflow_id, record.status)
        executor = self.executor  # type: ignore[attr-defined]
        if stored and executor is not None:
            executor.wake()  # the message may have made a workflow claimable now

    def send(
        self,
        workflow_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Send ``message`` (encoded by the app's serializer) to the workflow's
        ``perdure.recv(topic)``; durable when this returns.

        Messages of one topic are received in the order they were sent, each exactly
        once; a message sent before the workflow waits for it is kept. A repeated send
        with the same ``idempotency_key`` (per workflow) stores nothing. Raises
        ``WorkflowNotFoundError`` when no workflow has this ID, ``WorkflowFinishedError``
        when it has finished (nothing would ever receive the message).

        Inside a workflow the send is recorded like a step, and its idempotency key
        defaults to the sender's ID and position: it is delivered exactly once, also
        when the sender crashes and replays.
        """
        run = current_run.get()
        if run is not None:
            app: App = self  # type: ignore[assignment]
            send_from_workflow(app, run, workflow_id, message, topic, idempotency_key)
            return
        self._sent(workflow_id, self._send(workflow_id, message, topic, idempotency_key).result())

    async def send_async(
        self,
        workflow_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """``send`` for coroutines."""
        run = current_run.get()
        if run is not None:
            app: App = self  # type: ignore[assignment]
            await send_from_workflow_async(app, run, workflow_id, message, topic, idempotency_key)
            return
        future = self._send(workflow_id, message, topic, idempotency_key)
        self._sent(workflow_id, await asyncio.wrap_future(future))

    def _event(self, workflow_id: str, key: str, first: bool) -> tuple[bool, Any]:
        app: App = self  # type: ignore[assignment]
        value = app.store.get_event(workflow_id, key)
        if value is not None:
            return True, app.serializer.loads(value, Any)
        if first and app.store.get_workflow(workflow_id) is None:
            raise WorkflowNotFoundError(workflow_id)
        return False, None

    def _event_wait(self, deadline: float) -> float:
        app: App = self  # type: ignore[assignment]
        return min(app.wait_interval, deadline - app.clock.time())

    def get_event(self, workflow_id: str, key: str, timeout: float = 0.0) -> Any:
        """The value the workflow published as event ``key`` (``perdure.set_event``), or
        None if it has not within ``timeout`` seconds (0: look once).

        Looks at the store every ``poll_interval``; on PostgreSQL a set event wakes the
        wait at once. Raises ``WorkflowNotFoundError`` when no workflow has this ID.
        """
        app: App = self  # type: ignore[assignment]
        deadline = app.clock.time() + timeout
        first = True
        while True:
            waiter = app.notifier.subscribe(EVENT_EVENT + workflow_id)
            try:
                found, value = self._event(workflow_id, key, first)
                first = False
                if found:
                    return value
                wait = self._event_wait(deadline)
                if wait <= 0:
                    return None
                with contextlib.suppress(FutureTimeout):
                    waiter.result(timeout=wait)
            finally:
                app.notifier.unsubscribe(EVENT_EVENT + workflow_id, waiter)

    async def get_event_async(self, workflow_id: str, key: str, timeout: float = 0.0) -> Any:
        """``get_event`` for coroutines: waits without holding a thread."""
        app: App = self  # type: ignore[assignment]
        deadline = app.clock.time() + timeout
        first = True
        while True:
            waiter = app.notifier.subscribe(EVENT_EVENT + workflow_id)
            wrapped = asyncio.wrap_future(waiter)
            try:
                found, value = await asyncio.to_thread(self._event, workflow_id, key, first)
                first = False
                if found:
                    return value
                wait = self._event_wait(deadline)
                if wait <= 0:
                    return None
                await asyncio.wait({wrapped}, timeout=wait)
            finally:
                app.notifier.unsubscribe(EVENT_EVENT + workflow_id, waiter)
                wrapped.cancel()
