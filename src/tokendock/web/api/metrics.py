"""GET /metrics: Prometheus exposition (every worker's, with --workers N), and who may see the
operator's details (here and on /ready).

Details — metrics, each upstream deployment's state and last error text — are for the operator.
A server that listens on loopback only (127.0.0.1, ::1, localhost) shows them to any caller,
since only this machine can connect. One that listens beyond loopback shows them only to a
request bearing `Authorization: Bearer TOKENDOCK_METRICS_TOKEN`; without a configured token its
/metrics is refused (401) and a warning is logged at start. A configured token is always
required for /metrics, on loopback too.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from tokendock.config import Settings
from tokendock.errors import InvalidAPIKey, Unauthorized
from tokendock.web.deps import Deps

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request, deps: Deps) -> Response:
    settings = deps.settings
    if settings.metrics_token:
        if not bears_metrics_token(request, settings):
            raise InvalidAPIKey("The metrics endpoint needs the operator's metrics token.")
    elif not loopback_only(settings.host):
        raise Unauthorized(
            "The metrics endpoint is off: this server listens beyond loopback and has no "
            "metrics token (TOKENDOCK_METRICS_TOKEN)."
        )
    body, content_type = deps.metrics.render()
    return Response(body, media_type=content_type)


def loopback_only(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def bears_metrics_token(request: Request, settings: Settings) -> bool:
    token = settings.metrics_token
    if not token:
        return False
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


def shows_details(request: Request, settings: Settings) -> bool:
    """May this request see the operator's details (upstream errors, engine state)?"""
    return loopback_only(settings.host) or bears_metrics_token(request, settings)


def warn_if_exposed(settings: Settings) -> None:
    """At start: a server reachable from other machines without a metrics token."""
    if not loopback_only(settings.host) and not settings.metrics_token:
        log.warning(
            "listening on %s without TOKENDOCK_METRICS_TOKEN: /metrics is refused and /ready "
            "shows only ready / not ready; set a token to scrape metrics",
            settings.host,
        )
