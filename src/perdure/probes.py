"""Probes for ``Retry(wait_for=...)``: retry a step only once a network condition holds.

    import perdure
    from perdure import probes

    @app.step(retry=perdure.Retry(max_attempts=5, wait_for=probes.http("http://payments/health")))
    def charge(order: dict) -> dict: ...

Any callable works as a probe: truthy means up, falsy or raising means down.
"""

from ._probe import Probe, http, tcp

__all__ = ["Probe", "http", "tcp"]
