"""Data residency: an app whose workflows live in the databases of several regions.

``App(regions={"eu": url_eu, "us": url_us})`` holds one app per region (a *region
app*: an ordinary single-database ``App`` on that region's URL, sharing the registered
workflows, the serializer, the clock and the settings) in a ``Regions``. The app itself
has no database: it routes.

- A start outside a workflow goes to the region of ``app.options(region=...)``; there
  is no default region (a start without one is refused, naming the regions).
- Inside a workflow, every operation (a child's start, ``send``, ``cancel``,
  ``get_event``, ``retrieve``...) acts in the workflow's own region: its run holds that
  region's store, so its children, messages and events stay there. A child asked for
  in another region is refused: its outcome is delivered to its parent in the
  transaction that records it, which one database cannot do for another.
- An operation on a workflow ID outside a workflow (``retrieve``, ``send``, ``cancel``,
  ``get_event``, ``inspect``, ``resume``, ``fork``...) looks the ID up in every region's
  database (one indexed read each) and acts in the one that holds it;
  ``AmbiguousWorkflowError`` when several do. ``app.region("eu")`` is the region's own
  app, for naming the region instead (no lookup, and no other database touched).
- Listings merge the regions' pages; the bulk repairs, ``gc``, ``erase`` and ``rekey``
  act in each region. What works on one database only (breakers, the audit log,
  schedules, versions) is refused by the app's ``UnroutedClient``, which says to name
  the region. Each region's executors apply retention and fire the code's schedules in
  their own database.
- A process serves the regions it is told to: ``app.launch(regions=["eu"])`` or
  ``perdure worker mod:app --region eu`` starts the executors of those region apps
  only; without a choice it refuses, so that no deployment serves a region by default.

An app without ``regions`` does no lookup and no extra read: a start checks one
attribute (``regions is None``) and goes on as before; a method on a workflow ID goes
through one wrapper that checks the same attribute.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

from . import _compliance, _inspect
from ._client import Client
from ._compliance import GcResult
from ._engine.state import RunState, current_run
from ._errors import (
    AmbiguousWorkflowError,
    ConfigurationError,
    ErasureRefusedError,
    WorkflowNotFoundError,
)
from ._handle import WorkflowHandle, WorkflowStatus
from ._inspect import WorkflowPage
from ._options import StartOptions
from ._registry import Registry
from ._validation import check_workflow_id
from .storage import Store

#: What a region's name may be: short and plain, as it is typed on command lines.
REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])
Time = datetime | float | None


class RegionApp(Protocol):
    """What this module needs of a region's app (an ``App`` on one database)."""

    database_url: str
    registry: Registry
    client: Client

    @property
    def launched(self) -> bool: ...

    def launch(self, regions: Sequence[str] | None = None) -> Any: ...

    def shutdown(self, grace: float | None = None) -> None: ...

    def start_with(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]: ...

    async def start_with_async(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]: ...


class RegionalHost(Protocol):
    """What this module needs of the app: its regions (None for a single database)."""

    database_url: str
    regions: Regions | None
    client: Client


def label(urls: object, database_url: str | None) -> str:
    """The ``database_url`` of an app with regions (``regions:eu,us``: the app has no
    database of its own), after checking ``regions=``: a non-empty mapping of region
    names to URLs, and no ``database_url`` beside it."""
    if database_url is not None:
        raise ConfigurationError(
            "give an App either database_url or regions={name: url, ...}, not both: with "
            "regions, every workflow lives in the database of its region"
        )
    if not isinstance(urls, Mapping) or not urls:
        raise ConfigurationError(
            "regions must be a non-empty mapping of region names to database URLs, such as "
            f'regions={{"eu": "postgresql://...", "us": "postgresql://..."}}, not a '
            f"{type(urls).__name__}"  # never the value: it may be a URL with a password
        )
    for name, url in urls.items():
        if not isinstance(name, str) or not REGION_NAME.fullmatch(name):
            raise ConfigurationError(
                f"region name {name!r}: use 1 to 63 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit (such as 'eu' or 'us-east')"
            )
        if not isinstance(url, str) or not url:
            what = "an empty string" if url == "" else f"a {type(url).__name__}"
            raise ConfigurationError(f"region {name!r} needs a database URL, not {what}")
    return "regions:" + ",".join(urls)


def database_urls(app: RegionalHost) -> list[str]:
    """The URL of each database of ``app``: its own, or its regions'."""
    if app.regions is None:
        return [app.database_url]
    return [held.database_url for held in app.regions.apps.values()]


def store_holding(app: RegionalHost, workflow_id: str) -> Store:
    """The store that holds ``workflow_id`` (``WorkflowNotFoundError`` if none): the
    app's own, or its region's (``Regions.holding``)."""
    if app.regions is not None:
        return app.regions.holding(workflow_id).client.store
    store: Store = app.client.store
    if store.get_workflow(check_workflow_id(workflow_id)) is None:
        raise WorkflowNotFoundError(workflow_id)
    return store


class UnroutedClient(Client):
    """The client of an app with regions: it has no database. What reaches its store was
    not routed to a region, and is refused with the words to name one."""

    @property
    def store(self) -> Any:
        """Refused: an app with regions has one store per region."""
        names = self.database_url.removeprefix("regions:").split(",")
        raise ConfigurationError(
            f"this app's workflows live in regions {', '.join(names)}, each in its own "
            "database: this operation works on one database; call it on the region's app, "
            f"e.g. app.region({names[0]!r}) (on the command line: perdure --region "
            f"{names[0]} ...)"
        )

    def warn_without_executor(self) -> None:
        """Nothing: the region apps check their own executors."""


class Regions:
    """The region apps of an app, by region name; see the module docstring."""

    def __init__(
        self, urls: Mapping[str, str], make: Callable[[str], RegionApp], registry: Registry
    ) -> None:
        self.apps: dict[str, RegionApp] = {}
        for name, url in urls.items():
            app = make(url)
            # One registry: what the app registers (before or after) runs in every region.
            app.registry = app.client.registry = registry
            self.apps[name] = app

    @classmethod
    def of(cls, app: Any, urls: Mapping[str, str], settings: dict[str, Any]) -> Regions:
        """The regions of ``app`` (an ``App``): an app of its class per region, with its
        serializer, clock, settings and registry."""
        kind: Callable[..., RegionApp] = type(app)
        make = functools.partial(kind, serializer=app.serializer, clock=app.clock, **settings)
        return cls(urls, make, app.registry)

    @property
    def names(self) -> tuple[str, ...]:
        """The regions' names, in the order given."""
        return tuple(self.apps)

    @property
    def served(self) -> tuple[str, ...]:
        """The regions whose executors run in this process."""
        return tuple(name for name, app in self.apps.items() if app.launched)

    def named(self, region: str) -> RegionApp:
        """The app of ``region``; ``ConfigurationError`` naming the known ones if none."""
        app = self.apps.get(region) if isinstance(region, str) else None
        if app is None:
            raise ConfigurationError(
                f"unknown region {region!r}: this app's regions are {', '.join(self.names)}"
            )
        return app

    def of_run(self, run: RunState) -> tuple[str, RegionApp]:
        """The region (name and app) of a running workflow: the one whose store it uses."""
        for name, app in self.apps.items():
            if app.client.opened_store is run.store:
                return name, app
        raise ConfigurationError(  # a run of another app's executor: not ours to route
            f"workflow {run.workflow_id!r} runs on a database that is none of this app's "
            f"regions ({', '.join(self.names)})"
        )

    def holding(self, workflow_id: object) -> RegionApp:
        """The app of the region whose database holds ``workflow_id``: inside a workflow,
        the workflow's own region; outside, the one region found by looking in each
        (``WorkflowNotFoundError`` if none, ``AmbiguousWorkflowError`` if several)."""
        run = current_run.get()
        if run is not None:
            return self.of_run(run)[1]
        wanted = check_workflow_id(workflow_id)
        found = [
            name
            for name, app in self.apps.items()
            if app.client.store.get_workflow(wanted) is not None
        ]
        if not found:
            raise WorkflowNotFoundError(wanted)
        if len(found) > 1:
            raise AmbiguousWorkflowError(wanted, tuple(found))
        return self.apps[found[0]]

    def _target(self, options: StartOptions) -> tuple[RegionApp, StartOptions]:
        run = current_run.get()
        if run is not None:
            home, app = self.of_run(run)
            if options.region not in (None, home):
                raise ConfigurationError(
                    f"workflow {run.workflow_id!r} runs in region {home!r} and cannot start a "
                    f"child in region {options.region!r}: a workflow's children live in its "
                    "region. Start that workflow from outside a workflow with app.options"
                    f"(region={options.region!r}), or send its input to a workflow there"
                )
        elif options.region is None:
            raise ConfigurationError(
                "this app's workflows live in regions "
                f"{', '.join(self.names)}: choose one with app.options(region=...).start(...)"
            )
        else:
            app = self.named(options.region)
        return app, replace(options, region=None)

    def start_with(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """``App.start_with``, in the chosen region (or the running workflow's)."""
        app, options = self._target(options)
        return app.start_with(options, fn, args, kwargs)

    async def start_with_async(
        self,
        options: StartOptions,
        fn: Callable[..., Any] | str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> WorkflowHandle[Any]:
        """``start_with`` for coroutines."""
        app, options = self._target(options)
        return await app.start_with_async(options, fn, args, kwargs)

    def launch(self, regions: Sequence[str] | str | None) -> None:
        """Start the executors of ``regions``; without a choice, only an app that already
        serves some regions is left as it is (``with app.launch(regions=[...]):``)."""
        if regions is None:
            if self.served:
                return
            raise ConfigurationError(
                f"this app's workflows live in regions {', '.join(self.names)}: choose the "
                'regions this process serves: app.launch(regions=["..."]) or `perdure worker '
                "MODULE:APP --region NAME`"
            )
        chosen = [regions] if isinstance(regions, str) else list(regions)
        if not chosen:
            raise ConfigurationError("launch(regions=...) needs at least one region")
        apps = [self.named(name) for name in chosen]  # every name checked before any starts
        for app in apps:
            app.launch()

    def shutdown(self, grace: float | None) -> None:
        """Stop the executors of the served regions and close every region's database."""
        for app in self.apps.values():
            app.shutdown(grace)


# -- routing the app's methods -----------------------------------------------------------------


def region(app: RegionalHost, name: str) -> Any:
    """The app of region ``name``: an ``App`` on that region's database alone, with every
    method of ``App`` (``app.region("eu").retrieve(id)``, ``.list_page()``, ``.gc(...)``,
    ``.erase(...)``, ``.breakers()``...), acting in that database without looking at the
    others. ``ConfigurationError`` naming the regions for an unknown one, and on an app
    without regions."""
    if app.regions is None:
        raise ConfigurationError(
            f"region {name!r}: this app has one database and no regions (give the App "
            "regions={name: url, ...} to keep workflows in the database of their region)"
        )
    return app.regions.named(name)


def launch(app: R, regions: Sequence[str] | str | None) -> R:
    """``App.launch`` with regions: start the executors of ``regions`` (see
    ``Regions.launch``); ``ConfigurationError`` on an app without regions."""
    found: Regions | None = getattr(app, "regions", None)
    if found is None:
        raise ConfigurationError(
            f"launch(regions={regions!r}): this app has one database and no regions"
        )
    found.launch(regions)
    return app


def _id_parameter(fn: Callable[..., Any]) -> str:
    """The name of ``fn``'s parameter after the app: the workflow ID it acts on."""
    return list(inspect.signature(fn).parameters)[1]


def by_workflow(fn: F) -> F:
    """``fn(app, workflow_id, ...)`` as an app method that, on an app with regions, runs
    as the same method of the region app that holds the workflow (``Regions.holding``);
    on an app without, it is ``fn`` (its signature and type unchanged)."""
    name, parameter = fn.__name__, _id_parameter(fn)

    @functools.wraps(fn)
    def routed(app: Any, /, *args: Any, **kwargs: Any) -> Any:
        regions: Regions | None = app.regions
        if regions is None:
            return fn(app, *args, **kwargs)
        workflow_id = args[0] if args else kwargs.get(parameter)
        return getattr(regions.holding(workflow_id), name)(*args, **kwargs)

    return cast(F, routed)


def by_workflow_async(fn: F) -> F:
    """``by_workflow`` for coroutines: the lookup runs in a thread, off the event loop."""
    name, parameter = fn.__name__, _id_parameter(fn)

    @functools.wraps(fn)
    async def routed(app: Any, /, *args: Any, **kwargs: Any) -> Any:
        regions: Regions | None = app.regions
        if regions is None:
            return await fn(app, *args, **kwargs)
        workflow_id = args[0] if args else kwargs.get(parameter)
        # Inside a workflow the lookup reads nothing: the context var goes with the thread.
        holder = await asyncio.to_thread(regions.holding, workflow_id)
        return await getattr(holder, name)(*args, **kwargs)

    return cast(F, routed)


def in_each(
    merge: Callable[[list[R]], R],
) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[Concatenate[Any, P], R]]:
    """A decorator: ``fn(app, ...)`` as an app method that, on an app with regions, runs
    as the same method of every region app (in the regions' order) and returns the
    results merged by ``merge``; on an app without, it is ``fn``."""

    def decorate(fn: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
        name = fn.__name__

        @functools.wraps(fn)
        def each(app: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
            regions: Regions | None = app.regions
            if regions is None:
                return fn(app, *args, **kwargs)
            return merge([getattr(held, name)(*args, **kwargs) for held in regions.apps.values()])

        return each

    return decorate


def joined(lists: list[list[R]]) -> list[R]:
    """The lists one after the other (what ``in_each`` merges listed IDs with)."""
    return [item for items in lists for item in items]


def total(counts: list[int]) -> int:
    """The counts of the regions added up."""
    return sum(counts)


def gc_results(results: list[GcResult]) -> GcResult:
    """The garbage collections of the regions as one."""
    return GcResult(joined([result.trees for result in results]), results[0].dry_run)


def erase(app: Any, subject: str, *, actor: str | None = None) -> list[str]:
    """Erase the data of ``subject``: every stored payload (inputs, output, error, step
    results and errors, messages received, events set) of the workflows tagged with it
    at their start (``app.options(subjects=[...])``), of their descendants and of their
    forks is replaced with a tombstone, in one transaction; IDs, names, statuses,
    positions, topics, keys and times stay. Returns the IDs erased (empty when none is
    tagged; erasing again finds the same workflows and changes nothing more). Each is
    logged as an ``erase`` action.

    Refused with ``ErasureRefusedError`` (nothing changes) while any of those workflows
    is active: cancel them and wait for their end first, so that no running code writes
    the subject's data again after the erasure. On an app with regions, each region's
    database is erased in its own transaction: a region with active workflows of the
    subject refuses (nothing changes there) while the others are erased, and the error
    lists the active ones and what was erased; erase again once they have finished."""
    regions: Regions | None = app.regions
    if regions is None:
        return _compliance.erase(app, subject, actor=actor)
    erased: list[str] = []
    active: list[str] = []
    for held in regions.apps.values():
        try:
            erased += _compliance.erase(held, subject, actor=actor)
        except ErasureRefusedError as exc:
            active += exc.active
    if active:
        raise ErasureRefusedError(subject, active, erased)
    return erased


def list_workflows(
    app: Any,
    *,
    status: str | None = None,
    name: str | None = None,
    limit: int = 100,
    queue: str | None = None,
    key: str | None = None,
) -> list[WorkflowStatus]:
    """The newest workflows matching the filters (their steps are not loaded), from every
    region on an app with regions; ``queue`` and ``key`` (with ``queue``) keep a queue's
    workflows, of one key."""
    regions: Regions | None = app.regions
    filters: dict[str, Any] = {
        "status": status,
        "name": name,
        "limit": limit,
        "queue": queue,
        "key": key,
    }
    if regions is None:
        return app.client.list_workflows(**filters)  # type: ignore[no-any-return]
    found = [held.client.list_workflows(**filters) for held in regions.apps.values()]
    merged = heapq.merge(*found, key=lambda s: (s.created_at, s.workflow_id), reverse=True)
    return list(merged)[:limit]


def list_page(
    app: Any,
    *,
    status: str | None = None,
    name: str | None = None,
    created_after: Time = None,
    created_before: Time = None,
    limit: int = 50,
    cursor: str | None = None,
    queue: str | None = None,
    key: str | None = None,
) -> WorkflowPage:
    """One page of workflows matching every filter, newest first: ``status`` in any
    case, ``name``, creation time (a datetime or seconds since the epoch), ``queue`` and
    a queue's ``key``, at most
    ``limit`` (1 to 1,000). Pass the page's ``next_cursor`` as ``cursor`` for the next
    one; each page is one index range however deep, at millions of workflows. On an app
    with regions, a page holds the newest of every region's (one range per region; the
    cursor, a creation time and an ID, means the same in each)."""
    regions: Regions | None = app.regions
    hosts = [app.client] if regions is None else [a.client for a in regions.apps.values()]
    found = [
        _inspect.list_records(
            host,
            status=status,
            name=name,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
            queue=queue,
            key=key,
        )
        for host in hosts
    ]
    order = lambda record: (record.created_at, record.id)  # noqa: E731 - the listing's order
    records = list(heapq.merge(*found, key=order, reverse=True))
    return _inspect.page_of(records, limit)
