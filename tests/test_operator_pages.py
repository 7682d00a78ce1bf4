"""Schedules and queues operated by people (issues 12 and 14): each change to a schedule
or a queue's limits is an operator action in the audit log (who, when), and the
dashboard's Queues and Schedules pages over real HTTP (session, CSRF, escaping) and in a
real Chromium. On both stores."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner
from test_web_api import TOKEN, serving
from test_web_browser import browser, expect  # noqa: F401 - the module's Chromium fixture
from test_web_pages import Browserless, csrf_of

import perdure
from perdure._cli import cli
from perdure.web._session import COOKIE

if TYPE_CHECKING:  # playwright may be missing: then the browser fixture skips, saying why
    from playwright.sync_api import Browser, Page

QUEUES = [perdure.Queue("emails", concurrency=2, worker_concurrency=1)]
EVIL = "<b>x</b>"


def define(app: perdure.App) -> None:
    @app.workflow(name="report")
    def report(tick: object) -> str:
        return "done"


def test_schedule_and_queue_changes_are_operator_actions_in_the_audit_log(
    make_app: Callable[..., perdure.App], database_url: str
) -> None:
    app = make_app(queues=QUEUES)
    define(app)
    app.create_schedule("nightly", "report", "0 3 * * *", tz="Europe/Paris", actor="alice")
    assert app.pause_schedule("nightly", actor="bob") is True
    assert app.pause_schedule("nightly", actor="bob") is False  # nothing changed: no entry
    assert app.resume_schedule("nightly") is True  # the OS user by default
    app.update_queue("emails", concurrency=5, actor="carol")
    assert app.delete_schedule("nightly", actor="dave") is True
    entries = app.audit_log(schedule="nightly")
    assert [(e.action, e.actor, e.workflow_id) for e in entries] == [
        ("create_schedule", "alice", "perdure.schedule:nightly"),
        ("pause_schedule", "bob", "perdure.schedule:nightly"),
        ("resume_schedule", getpass.getuser(), "perdure.schedule:nightly"),
        ("delete_schedule", "dave", "perdure.schedule:nightly"),
    ]
    assert entries[0].details["cron"] == "0 3 * * *" and entries[0].details["tz"] == "Europe/Paris"
    assert all(e.at.tzinfo is not None for e in entries)
    [queued] = app.audit_log(queue="emails")
    assert (queued.action, queued.actor) == ("update_queue", "carol")
    assert (
        queued.details["before"]["concurrency"] == 2 == queued.details["after"]["concurrency"] - 3
    )
    assert [e.action for e in app.audit_log(action="pause_schedule")] == ["pause_schedule"]
    with pytest.raises(perdure.InvalidValueError, match="one of workflow_id, schedule and queue"):
        app.audit_log(schedule="nightly", queue="emails")
    # The CLI: changes name their actor; `perdure audit` filters and prints them.
    app.create_schedule("hourly", "report", "0 * * * *")
    url = ["--database-url", database_url]
    paused = CliRunner().invoke(cli, ["schedules", *url, "--pause", "hourly", "--actor", "eve"])
    assert paused.exit_code == 0, paused.output
    audit = CliRunner().invoke(cli, ["audit", *url, "--schedule", "hourly"])
    assert audit.exit_code == 0, audit.output
    lines = audit.stdout.splitlines()
    assert len(lines) == 2 and "  eve  pause_schedule  perdure.schedule:hourly  {}" in lines[1]
    assert "create_schedule  perdure.schedule:hourly" in lines[0]


def test_queues_and_schedules_pages_show_and_change_them(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app(queues=[*QUEUES, perdure.Queue(EVIL)])
    define(app)
    app.create_schedule("nightly", "report", "0 3 * * *", tz="Europe/Paris")
    app.create_schedule(EVIL, "report", "*/5 * * * *")
    for n in range(3):
        app.options(queue="emails", workflow_id=f"e{n}").start("report", n)
    with serving(app) as base, Browserless(base) as http:
        assert http.get("/queues").status_code == 303  # a login first
        login = http.post("/login", data={"token": TOKEN}, headers={"Origin": base})
        sid = login.cookies[COOKIE]
        page = http.get("/queues", sid)
        assert page.status_code == 200 and 'href="/queues"' in page.text
        assert 'data-name="emails"' in page.text and 'class="num waiting">3<' in page.text
        assert 'name="concurrency" value="2"' in page.text
        token, origin = csrf_of(page.text), {"Origin": base}
        # Refused without the CSRF token, or from another site: nothing changes.
        form = {"concurrency": "7", "worker_concurrency": "", "key_concurrency": "1"}
        no_csrf = http.post("/queues/emails/limits", sid, data=form, headers=origin)
        assert no_csrf.status_code == 403
        evil_site = {"Origin": "http://evil.example"}
        other = http.post(
            "/queues/emails/limits", sid, data={**form, "csrf_token": token}, headers=evil_site
        )
        assert other.status_code == 403 and app.queue("emails").concurrency == 2
        done = http.post(
            "/queues/emails/limits",
            sid,
            data={**form, "csrf_token": token, "rate_limit": "10", "rate_per": "60"},
            headers=origin,
        )
        assert done.status_code == 303 and done.headers["location"] == "/queues"
        assert app.queue("emails") == perdure.Queue(
            "emails", concurrency=7, key_concurrency=1, rate=perdure.Rate(10, 60)
        )
        assert [(e.action, e.actor) for e in app.audit_log(queue="emails")] == [
            ("update_queue", "dashboard")
        ]
        bad = http.post(
            "/queues/emails/limits",
            sid,
            data={"csrf_token": token, "concurrency": "0"},
            headers={**origin, "HX-Request": "true"},
        )
        assert bad.status_code == 200 and bad.headers["HX-Retarget"] == "#notice"
        assert app.queue("emails").concurrency == 7
        # Schedules: cron, zone, next and last tick; pause and resume.
        shown = http.get("/schedules", sid)
        assert shown.status_code == 200 and 'data-name="nightly"' in shown.text
        assert "0 3 * * *" in shown.text and "Europe/Paris" in shown.text and "ACTIVE" in shown.text
        paused = http.post(
            "/schedules/nightly/pause", sid, data={"csrf_token": token}, headers=origin
        )
        assert paused.status_code == 303 and paused.headers["location"] == "/schedules"
        assert [s.paused for s in app.schedules() if s.name == "nightly"] == [True]
        assert "PAUSED" in http.get("/schedules", sid).text
        refused = http.post("/schedules/nightly/resume", sid, data={}, headers=origin)
        assert refused.status_code == 403
        resumed = http.post(
            "/schedules/nightly/resume", sid, data={"csrf_token": token}, headers=origin
        )
        assert resumed.status_code == 303
        assert [(e.action, e.actor) for e in app.audit_log(schedule="nightly")] == [
            ("create_schedule", getpass.getuser()),
            ("pause_schedule", "dashboard"),
            ("resume_schedule", "dashboard"),
        ]
        # The list filters by queue and key; its bulk forms, which take no queue filter,
        # are not offered there (they would act on more than is listed).
        app.options(queue="emails", key="k9", workflow_id="keyed").start("report", 9)
        listed = http.get("/?queue=emails&name=report", sid).text
        assert (
            all(f'data-id="e{n}"' in listed for n in range(3))
            and 'name="queue" value="emails"' in listed
        )
        assert "bulk-cancel" not in listed and "bulk-cancel" in http.get("/?name=report", sid).text
        keyed = http.get("/?queue=emails&key=k9", sid).text
        assert 'data-id="keyed"' in keyed and 'data-id="e0"' not in keyed
        assert "without a queue" in http.get("/?key=k9", sid).text
        # Every name is text, never markup.
        for path in ("/queues", "/schedules"):
            text = http.get(path, sid).text
            assert EVIL not in text and "&lt;b&gt;x&lt;/b&gt;" in text


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:  # noqa: F811 - this module's own page
    context = browser.new_context()
    context.set_default_timeout(30_000)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())
    yield opened
    context.close()


def test_pause_a_schedule_and_change_a_queue_limit_in_a_browser(
    make_app: Callable[..., perdure.App], page: Page
) -> None:
    app = make_app(queues=QUEUES)
    define(app)
    app.create_schedule("nightly", "report", "0 3 * * *")
    app.options(queue="emails", workflow_id="e1").start("report", 1)
    with serving(app, token=None) as base:
        page.goto(base + "/")
        page.click("nav >> text=Schedules")
        row = page.locator('tr[data-name="nightly"]')
        expect(row).to_contain_text("ACTIVE")
        row.locator("button", has_text="Pause").click()
        expect(row).to_contain_text("PAUSED")
        assert [s.paused for s in app.schedules()] == [True]
        page.click("nav >> text=Queues")
        queue = page.locator('tr[data-name="emails"]')
        expect(queue.locator("td.waiting")).to_have_text("1")
        queue.locator('input[name="concurrency"]').fill("9")
        # The filled field shows 9 at once: wait for the page the change redirects to
        # (a fresh page, whose field is 9 only if stored).
        with page.expect_navigation():
            queue.locator("button", has_text="Save").click()
        expect(queue.locator('input[name="concurrency"]')).to_have_value("9")
        assert app.queue("emails").concurrency == 9
    assert [(e.action, e.actor) for e in app.audit_log(after=0)][-2:] == [
        ("pause_schedule", "dashboard"),
        ("update_queue", "dashboard"),
    ]


def test_on_an_app_with_regions_the_pages_say_to_serve_a_regions_app(tmp_path: Path) -> None:
    urls = {region: f"sqlite:///{tmp_path}/{region}.db" for region in ("eu", "us")}
    app = perdure.App(regions=urls, queues=QUEUES)
    try:
        with serving(app, token=None) as base, Browserless(base) as http:
            for path in ("/queues", "/schedules"):
                answer = http.get(path)
                assert answer.status_code == 409 and "app.region(" in answer.text
    finally:
        app.shutdown(grace=0.5)
