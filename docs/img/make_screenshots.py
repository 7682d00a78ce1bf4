"""Screenshots of the dashboard for the docs: ``make screenshots``.

Runs a small shop on a temporary SQLite file (checkouts that succeed, retry, fail with a
traceback, wait for an approval, and one still running), serves its dashboard with
uvicorn on a free port of 127.0.0.1, and saves what Debian's Chromium
(``/usr/bin/chromium``, driven by Playwright) shows into this folder:
``dashboard-list.png`` and ``dashboard-workflow.png``.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

import perdure
from perdure.web import create_app

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"

app = perdure.App(f"sqlite:///{tempfile.mkdtemp()}/shop.db", poll_interval=0.05)
release = threading.Event()
declined = {"order-1041"}
flaky = {"order-1038": 1}


@app.step
def reserve_inventory(order: str, items: list[str]) -> dict[str, object]:
    time.sleep(0.08)
    return {"order": order, "reserved": items, "warehouse": "ams-2"}


@app.step(retry=perdure.Retry(max_attempts=3, initial_interval=0.2))
def charge_card(order: str, amount: str) -> dict[str, str]:
    time.sleep(0.15)
    if order in declined:
        raise RuntimeError(f"card declined for {order}: insufficient funds (code 51)")
    if flaky.get(order, 0) > 0:
        flaky[order] -= 1
        raise ConnectionError("payments.internal:443: connection reset by peer")
    return {"charge": f"ch_{order[-4:]}9f2", "amount": amount}


@app.step
def create_shipment(order: str) -> dict[str, str]:
    if order == "order-1044":
        release.wait(60)
    time.sleep(0.12)
    return {"tracking": f"1Z{order[-4:]}0A7", "carrier": "ups"}


@app.step
def send_receipt(order: str, charge: dict[str, str]) -> bool:
    time.sleep(0.05)
    return True


@app.workflow
def checkout(order: str, items: list[str], amount: str) -> dict[str, object]:
    reserve_inventory(order, items)
    charge = charge_card(order, amount)
    shipment = create_shipment(order)
    send_receipt(order, charge)
    return {"order": order, "charge": charge["charge"], "tracking": shipment["tracking"]}


@app.workflow
def large_refund(order: str, amount: str) -> str:
    perdure.set_event("stage", "waiting for a manager")
    decision = perdure.recv("approval", timeout=86400)
    return f"refund of {amount} for {order}: {decision}"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out preparing the screenshots")
        time.sleep(0.05)


def main() -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    with app:
        handles = []
        for n in range(1036, 1044):
            order = f"order-{n}"
            items = [f"sku-{n * 7 % 100}", f"sku-{n * 3 % 100}"]
            starter = app.options(workflow_id=order)
            handles.append(starter.start(checkout, order, items, f"{n % 90 + 10}.90"))
            time.sleep(0.1)
        refund = app.options(workflow_id="refund-2207").start(large_refund, "order-1019", "420.00")
        running = app.options(workflow_id="order-1044").start(
            checkout, "order-1044", ["sku-12"], "64.50"
        )
        for handle in handles:
            wait_for(lambda handle=handle: handle.status().done)
        wait_for(lambda: refund.status().waiting_for is not None)
        wait_for(lambda: len(running.status().steps) >= 2)

        port = free_port()
        config = uvicorn.Config(create_app(app), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started)
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport={"width": 1280, "height": 640})
                page.goto(base + "/")
                page.screenshot(path=str(HERE / "dashboard-list.png"))
                page.set_viewport_size({"width": 1280, "height": 900})
                page.goto(base + "/workflows/order-1041")
                page.screenshot(path=str(HERE / "dashboard-workflow.png"), full_page=True)
                browser.close()
        finally:
            release.set()
            server.should_exit = True
            thread.join(10)
    print(f"saved {HERE / 'dashboard-list.png'} and {HERE / 'dashboard-workflow.png'}")


if __name__ == "__main__":
    sys.exit(main())
