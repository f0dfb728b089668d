"""The admin dashboard (/admin) and the team portal (/portal): server-rendered pages.

Jinja2 templates, htmx and uPlot vendored under `static/` (see static/VENDORED.md), no build step.
Pages reuse the services in shared/; sessions are signed cookies (api/ui/sessions.py).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the dashboard, the portal and their static files on the API app."""
    from api.ui import admin_jobs, admin_money, admin_pages, admin_teams, auth, portal

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    for module in (auth, admin_pages, admin_teams, admin_money, admin_jobs, portal):
        app.include_router(module.router)
