"""fastq's web dashboard (extra ``dashboard``: starlette, uvicorn, jinja2).

``fastq dashboard --port 8080`` serves it; ``create_app(DashboardConfig(...))`` gives the
ASGI app to mount elsewhere. Queues with sizes and throughput, tasks per state with
pagination and search by ID, task details, servers and their running tasks, periodic
entries; pause/resume queues and run/archive/delete/cancel tasks behind a token, same-origin
and CSRF checks, or ``read_only``. See ``fastq/dashboard/app.py`` for the security model.
"""
from fastq.dashboard.app import LOOPBACK_HOSTS, MIN_TOKEN_LENGTH, DashboardConfig, create_app

__all__ = ["DashboardConfig", "create_app", "LOOPBACK_HOSTS", "MIN_TOKEN_LENGTH"]
