"""Custom Vision-compatible HTTP API: the official Azure SDK works against `cvbot serve` with only the endpoint and
keys changed. `setup(app, container)` is called by cvbot/server.py."""
from __future__ import annotations

import logging

from aiohttp import web

from . import labelling as _labelling  # noqa: F401 - registers the operations
from . import prediction as _prediction  # noqa: F401 - registers the operations
from . import training as _training  # noqa: F401 - registers the operations
from .http import PREDICTION, REGISTRY, TRAINING, any_case_prefix, json_errors, make_handler
from .limits import RateLimiter
from .links import setup_links
from .openapi import document
from .training import EXPORT_DOWNLOAD, download_export

log = logging.getLogger(__name__)

# What the SDK 3.1.1 speaks first; older SDKs and scripts use the other versions (same handlers).
PREFIXES = {TRAINING: "/customvision/v3.4-preview/training", PREDICTION: "/customvision/v3.1/prediction"}
ALIASES = {
    TRAINING: [f"/customvision/{v}/training" for v in ("v3.3", "v3.2", "v3.1", "v3.0")],
    PREDICTION: ["/customvision/v3.0/prediction"],
}


def setup(app: web.Application, container) -> None:
    app.middlewares.insert(0, any_case_prefix)  # before every other middleware: it re-runs them
    app.middlewares.append(json_errors)
    settings = container.settings
    limiter = RateLimiter(settings.rate_limit, settings.rate_limits)
    for op in REGISTRY.operations:
        handler = make_handler(op, container, limiter if limiter.enabled else None)
        for prefix in [PREFIXES[op.api], *ALIASES[op.api]]:
            app.router.add_route(op.method, prefix + op.path, handler)
    spec = document(REGISTRY.operations, PREFIXES, ALIASES)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get(EXPORT_DOWNLOAD, lambda request: download_export(request, container))
    setup_links(app, container)
    log.info("Custom Vision API at %s and %s (training key %s, prediction key %s; generated workspace keys work too)",
             PREFIXES[TRAINING], PREFIXES[PREDICTION], "configured" if settings.training_key else "not configured",
             "configured" if settings.prediction_key else "not configured")
    if limiter.enabled:
        log.info("rate limits: %s requests per second per key by default, %d per-key overrides (per process)",
                 settings.rate_limit or "no limit", len(settings.rate_limits))
