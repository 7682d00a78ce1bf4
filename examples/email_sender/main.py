"""A per-customer e-mail sender under a third party's rate limit:
``python examples/email_sender/main.py``.

A mail provider's API (provider.py) is served on a local port; it answers 429 past 5
requests a second. The sender (mailer.py) starts one workflow per e-mail in the queue
``emails``: at most 4 deliveries at once, one at a time per customer, at most 5 starts
in 1.25 s (the provider's 5 a second, and room for jitter). This script plays a busy
minute, while the sender's worker is down for a deploy: customer "acme" sends a
newsletter to 8 people, "globex" and "initech" a few e-mails each, a password reset for
"initech" comes in with priority -1, and a welcome e-mail is started twice with the
same ``dedup_id`` (a retried web request). Then the worker starts. The script prints
what the provider saw: no 429 (the step would retry one), never two sends of one
customer at once, and the small customers served while acme's newsletter was still
going out.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import mailer
import provider
from _support import LocalServer, run_id, say, scratch_folder

app = mailer.app

NEWSLETTER = 8


@dataclass
class Outcome:
    """What the provider saw, for the narration and for the example's test."""

    sent: list[dict[str, object]]
    rejected: int
    peak_per_customer: int
    #: The most deliveries the provider started within one second.
    peak_per_second: int
    #: The most e-mails the queue started within one window of its rate (the start
    #: times its records hold).
    starts_per_window: int
    #: The customers, in the order the queue started their e-mails.
    started: list[str]
    #: Whether the password reset was among the first the queue started.
    reset_first: bool
    #: Whether the second start of the welcome e-mail returned the first one's handle.
    deduplicated: bool


def peak_per_second(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` within any one ``window`` of seconds."""
    return max((sum(1 for t in times if s - window < t <= s) for s in times), default=0)


def run() -> Outcome:
    """Serve the provider, queue the e-mails, start the worker (``app.launch``), wait for
    every e-mail; narrated."""
    tag = run_id("mail")
    mail = provider.Provider()
    with LocalServer(mail.api, "provider") as server:
        say(f"Mail provider on {server.url} (at most {provider.RATE} requests a second)")
        handles = [
            mailer.send(server.url, "acme", f"reader{n}@example.com", f"Newsletter #{n}")
            for n in range(NEWSLETTER)
        ]
        say(f"acme: a newsletter to {NEWSLETTER} readers, queued")
        for customer in ("globex", "initech"):
            for n in range(2):
                handles.append(
                    mailer.send(server.url, customer, f"user{n}@{customer}.com", "Your invoice")
                )
        say("globex and initech: 2 invoices each, queued behind acme's newsletter")
        reset = mailer.send(server.url, "initech", "ceo@initech.com", "Password reset", priority=-1)
        say("initech: a password reset, priority -1")
        welcome = [
            mailer.send(
                server.url, "globex", "new@globex.com", "Welcome!", dedup_id=f"welcome-{tag}"
            )
            for _ in range(2)
        ]
        deduplicated = welcome[0].workflow_id == welcome[1].workflow_id
        say(f"globex: a welcome e-mail started twice, {'one' if deduplicated else 'two'} sent")
        queued = handles[-1].status().queued
        if queued is not None:
            say(f"the last invoice is {queued.describe()}")
        app.launch()
        say("The sender's worker is up.")
        everything = [*handles, reset, welcome[0]]
        for handle in everything:
            handle.result(timeout=120)
    records = [app.store.get_workflow(handle.workflow_id) for handle in everything]
    started = sorted((r.dequeued_at or 0.0, r.queue_key or "") for r in records if r)
    first = min(at for at, _ in started)
    reset_record = app.store.get_workflow(reset.workflow_id)
    rate = mailer.emails.rate
    sent = mail.sent
    outcome = Outcome(
        sent=sent,
        rejected=mail.rejected,
        peak_per_customer=mail.peak_per_customer,
        peak_per_second=peak_per_second([float(str(m["at"])) for m in sent]),
        starts_per_window=peak_per_second([at for at, _ in started], rate.per if rate else 1),
        started=[customer for _, customer in started],
        reset_first=reset_record is not None and reset_record.dequeued_at == first,
        deduplicated=deduplicated,
    )
    say(f"The provider sent {len(sent)} e-mails and answered 429 {outcome.rejected} time(s);")
    say(f"  at most {outcome.peak_per_second} in one second, at most {outcome.peak_per_customer}")
    say(f"  of one customer at once; the queue started at most {outcome.starts_per_window}")
    say(f"  in {rate.per if rate else 1} s.")
    order = [str(m["customer"]) + ": " + str(m["subject"]) for m in sent]
    say(f"  first sent: {order[0]}; last: {order[-1]}")
    if outcome.reset_first:
        say("  the password reset started first (priority -1)")
    last_small = max(i for i, c in enumerate(outcome.started) if c != "acme")
    say(f"  every e-mail of globex and initech started among the first {last_small + 1}")
    return outcome


def main() -> None:
    with scratch_folder("email-sender"):
        try:
            run()
        finally:
            app.shutdown()


if __name__ == "__main__":
    main()
