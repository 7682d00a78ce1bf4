"""The sender: one workflow per e-mail, through a queue that keeps the provider's limits.

``emails`` lets 4 e-mails be delivered at once across every worker, one at a time per
customer (``key_concurrency=1``: the key is the customer), and at most 5 start in any
1.25 seconds (``rate``): the provider's 5 a second, with a quarter of a second for the
jitter between a workflow's start and its request reaching the provider, so that the
provider does not have to say 429 (the step retries if it does). When one
customer sends a newsletter to many people, the others still get their turn (the queue
takes one e-mail of each customer before the second of any), and a password reset
(``priority=-1``) goes before both.
"""

from __future__ import annotations

import httpx

import perdure

emails = perdure.Queue(
    "emails",
    concurrency=4,
    key_concurrency=1,
    rate=perdure.Rate(5, per=1.25),
)
app = perdure.App(queues=[emails])  # PERDURE_DATABASE_URL, or ./perdure.db


@app.step(retry=perdure.Retry(max_attempts=5, initial_interval=0.5))
def deliver(url: str, customer: str, to: str, subject: str) -> str:
    """Ask the provider to send one e-mail; its message ID is recorded, so a replay does
    not send it again. Retried if the provider fails (a 429 included: it should not
    happen, the queue keeps its rate)."""
    response = httpx.post(
        f"{url}/send", json={"customer": customer, "to": to, "subject": subject}, timeout=10
    )
    response.raise_for_status()
    return str(response.json()["id"])


@app.workflow
def send_email(url: str, customer: str, to: str, subject: str) -> str:
    """Deliver one e-mail; returns the provider's message ID."""
    return deliver(url, customer, to, subject)


def send(
    url: str, customer: str, to: str, subject: str, **options: object
) -> perdure.WorkflowHandle[str]:
    """Start ``send_email`` in the queue, keyed by customer (``options``: priority,
    dedup_id, delay...)."""
    starter = app.options(queue="emails", key=customer, **options)  # type: ignore[arg-type]
    return starter.start(send_email, url, customer, to, subject)
