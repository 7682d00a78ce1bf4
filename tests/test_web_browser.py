"""The dashboard in a real browser: Debian's Chromium (``/usr/bin/chromium``, installed by
``make test`` through scripts/ensure-browser.sh) driven by Playwright, against uvicorn on
a free port serving ``create_app`` over a launched app.

Without Chromium (or Playwright) these tests skip, saying why; with
``PERDURE_REQUIRE_BROWSER=1`` (CI) that is a failure instead. Every wait is on what the
page shows, with generous deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_web_api import TOKEN, serving, wait_for

import perdure

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the browser fixture skips (or fails) with the reason
    sync_playwright = None

CHROMIUM = os.environ.get("PERDURE_CHROMIUM", "/usr/bin/chromium")
#: How long the page may take to show what a test waits for (polls are every 2 s).
SHOWN = 30_000
if sync_playwright is not None:
    expect.set_options(timeout=SHOWN)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium, once for the module (launching it is the slow part)."""
    problem = None
    if sync_playwright is None:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    elif not os.access(CHROMIUM, os.X_OK):
        problem = (
            f"no Chromium at {CHROMIUM}: apt-get install chromium (make test installs it "
            "when run as root), or set PERDURE_CHROMIUM"
        )
    if problem is not None:
        if os.environ.get("PERDURE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests cannot run: {problem} (PERDURE_REQUIRE_BROWSER=1)")
        pytest.skip(f"browser tests skipped: {problem}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookie) whose confirmations are accepted."""
    context = browser.new_context()
    context.set_default_timeout(SHOWN)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())
    yield opened
    context.close()


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[perdure.App]:
    app = perdure.App(f"sqlite:///{tmp_path}/perdure.db", poll_interval=0.05, shutdown_grace=2)
    yield app
    app.shutdown(grace=0.5)


def row(page: Page, workflow_id: str) -> Any:
    return page.locator(f'tr[data-id="{workflow_id}"]')


def test_the_list_updates_while_a_workflow_runs(sqlite_app: perdure.App, page: Page) -> None:
    app = sqlite_app
    gate = threading.Event()

    @app.step
    def slow() -> int:
        gate.wait(60)
        return 1

    @app.workflow(name="job")
    def job() -> int:
        return slow() + 1

    # A script refused by the Content-Security-Policy, or failing, shows here.
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    with app, serving(app, token=None) as base:
        app.options(workflow_id="job-1").start(job)
        page.goto(base + "/")
        expect(row(page, "job-1")).to_contain_text("RUNNING")
        # A mark in the page's window: a reload would drop it.
        page.evaluate("window.notReloaded = true")
        app.options(workflow_id="job-2").start(job)
        expect(row(page, "job-2")).to_be_visible()
        gate.set()
        expect(row(page, "job-1")).to_contain_text("SUCCEEDED")
        expect(row(page, "job-2")).to_contain_text("SUCCEEDED")
        assert page.evaluate("window.notReloaded") is True
        # Filters: the status filter is applied by the server.
        page.select_option("select[name=status]", "FAILED")
        page.click("form.filters button[type=submit]")
        expect(page.locator(".empty")).to_contain_text("No workflow matches")
    assert problems == []


def test_the_timeline_shows_each_step(sqlite_app: perdure.App, page: Page) -> None:
    app = sqlite_app
    gate = threading.Event()

    @app.step
    def reserve(order: str) -> str:
        return f"r-{order}"

    @app.step
    def charge(order: str) -> str:
        gate.wait(60)
        return f"c-{order}"

    @app.step
    def ship(order: str) -> str:
        return f"s-{order}"

    @app.workflow(name="notify")
    def notify(order_id: str) -> str:
        return f"n-{order_id}"

    @app.workflow(name="order")
    def order(order_id: str) -> list[str]:
        return [reserve(order_id), charge(order_id), ship(order_id), notify(order_id)]

    with app, serving(app, token=None) as base:
        handle = app.options(workflow_id="o-7").start(order, "7")
        wait_for(lambda: len(handle.status().steps) >= 1)
        page.goto(base + "/workflows/o-7")
        steps = page.locator("tr.step")
        expect(page.locator("#status")).to_contain_text("RUNNING")
        expect(steps.first).to_contain_text("reserve")
        gate.set()
        # The page follows the workflow: each step appears, then its outcome.
        expect(page.locator("#status")).to_contain_text("SUCCEEDED")
        for number, name in enumerate(["reserve", "charge", "ship"]):
            step = steps.nth(number)
            expect(step).to_contain_text(name)
            expect(step).to_contain_text("SUCCEEDED")
            expect(step.locator("svg.bar rect")).to_have_count(1)
            assert step.locator("td.time").first.inner_text().startswith("20")
        # The child it started, on the same axis, links to its own page.
        child = page.locator("tr.child")
        expect(child).to_have_count(1)
        expect(child).to_contain_text("notify")
        expect(child).to_contain_text("SUCCEEDED")
        expect(child.locator("svg.bar rect")).to_have_count(1)
        expect(page.locator("#output")).to_contain_text("n-7")
        expect(page.locator("#detail")).to_contain_text("none")  # no owner once done


def test_resume_of_a_failed_workflow_from_the_page(
    make_app: Callable[..., perdure.App], page: Page
) -> None:
    app = make_app()
    broken = {"charge": True}

    @app.step(retry=perdure.Retry(max_attempts=1))
    def charge(amount: int) -> int:
        if broken["charge"]:
            raise RuntimeError("card declined")
        return amount * 2

    @app.workflow(name="checkout")
    def checkout(amount: int) -> int:
        return charge(amount)

    with app, serving(app, token=None) as base:
        handle = app.options(workflow_id="pay-1").start(checkout, 21)
        wait_for(lambda: handle.status().status == "FAILED")
        page.goto(base + "/workflows/pay-1")
        expect(page.locator("#status")).to_contain_text("FAILED")
        expect(page.locator("#error")).to_contain_text("card declined")
        expect(page.locator("pre.traceback")).to_contain_text("Traceback")
        broken["charge"] = False
        page.click("#resume")
        expect(page.locator("#status")).to_contain_text("SUCCEEDED")
        expect(page.locator("#output")).to_contain_text("42")
        expect(page.locator("#detail")).to_contain_text("resumed 1 time(s)")
        expect(page.locator("#detail")).to_contain_text("by dashboard")
    assert handle.result(timeout=5) == 42


def test_fork_from_a_step_from_the_page(sqlite_app: perdure.App, page: Page) -> None:
    app = sqlite_app
    runs = {"first": 0, "second": 0}

    @app.step
    def first() -> int:
        runs["first"] += 1
        return 10

    @app.step
    def second(value: int) -> int:
        runs["second"] += 1
        return value + runs["second"]

    @app.workflow(name="pipeline")
    def pipeline() -> int:
        return second(first())

    with app, serving(app, token=None) as base:
        handle = app.options(workflow_id="p-1").start(pipeline)
        assert handle.result(timeout=15) == 11
        page.goto(base + "/workflows/p-1")
        page.select_option("#from-step", "1")  # keep [0] first, run second anew
        page.fill("form.fork input[name=workflow_id]", "p-1-fork")
        page.click("#fork")
        page.wait_for_url("**/workflows/p-1-fork")
        expect(page.locator("#status")).to_contain_text("SUCCEEDED")
        expect(page.locator("#output")).to_contain_text("12")
        expect(page.locator("#detail")).to_contain_text("p-1 (its first 1 step(s))")
    assert runs == {"first": 1, "second": 2}


def test_cancel_from_the_page_after_logging_in(sqlite_app: perdure.App, page: Page) -> None:
    app = sqlite_app

    @app.workflow(name="approval")
    def approval() -> str:
        return str(perdure.recv("decision", timeout=300))

    with app, serving(app, token=TOKEN) as base:
        app.options(workflow_id="a-1").start(approval)
        page.goto(base + "/workflows/a-1")
        page.wait_for_url("**/login")
        page.fill("input[name=token]", "not the token, but long enough")
        page.click("button[type=submit]")
        expect(page.locator(".notice")).to_contain_text("not the token")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        expect(row(page, "a-1")).to_contain_text("message on topic 'decision'")
        page.click('tr[data-id="a-1"] a')
        expect(page.locator("#status")).to_contain_text("RUNNING")
        page.click("#cancel")
        expect(page.locator("#status")).to_contain_text("CANCELLED")
        expect(page.locator("#detail")).to_contain_text("by dashboard")
    assert [a.actor for a in app.store.list_actions("a-1")] == ["dashboard"]
