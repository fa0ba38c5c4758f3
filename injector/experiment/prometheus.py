"""chaostoolkit-prometheus's probes, same names and arguments (``chaosprometheus.probes`` ``query`` /
``query_interval``, base URL from ``configuration.prometheus_base_url``): output is Prometheus's JSON payload
as-is, as there. The client itself (and the seed's ``{"type": "prometheus"}`` provider's value reading) is
``chaosinject.httpclient``.
"""

from __future__ import annotations

from ..httpclient import instant_query, range_query

__all__ = ["query", "query_interval", "CHAOSPROMETHEUS_FUNCS"]

CHAOSPROMETHEUS_FUNCS = ("query", "query_interval")
DEFAULT_BASE_URL = "http://localhost:9090"


def _base(configuration: dict | None) -> str:
    return (configuration or {}).get("prometheus_base_url", DEFAULT_BASE_URL)


def query(query: str, when: str | None = None, timeout: float | None = None,
          configuration: dict | None = None, secrets: dict | None = None) -> dict:
    """Instant query; returns Prometheus's JSON payload as-is (chaosprometheus.probes.query)."""
    return instant_query(_base(configuration), query, when, timeout)


def query_interval(query: str, start: str, end: str | None = None, step: int | float | str = 1,
                   timeout: float | None = None, configuration: dict | None = None,
                   secrets: dict | None = None) -> dict:
    """Range query; returns Prometheus's JSON payload as-is (chaosprometheus.probes.query_interval)."""
    return range_query(_base(configuration), query, start, end, step, timeout)
