"""The public status page's content (``GET /status``, ``/status.json``): each SLO's state
and error budget, and the last 24 hours of the synthetic canary (docs/status-page.md).

``slos`` judges each SLO of the catalog from a ``promql.PromqlSource``; ``canary`` reads
the canary's history through the service; ``page`` puts both in a ``Snapshot``, computed
at most once per 30 s per process. A snapshot holds no key, host, topic name or error
text: only states, numbers, times and short fixed reasons.
"""

from latam.status.page import Snapshot, StatusPage, overall

__all__ = ["Snapshot", "StatusPage", "overall"]
