"""The project's ``fastq.App``, built from Django's settings.

Workers run it with ``fastq-supervisor mysite.fastq_app:app``: importing this module sets Django
up (in the supervisor, before it forks the workers) and imports the ``tasks`` module of every
installed app, so that each task is registered.
"""
import os

import django
from django.apps import apps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
if not apps.ready:  # in a worker; under runserver or a test run Django is set up already
    django.setup()

from django.conf import settings  # noqa: E402
from django.db import close_old_connections  # noqa: E402
from django.utils.module_loading import autodiscover_modules  # noqa: E402

import fastq  # noqa: E402


def django_db(handler):
    """Middleware: drop broken or expired database connections around each task, as Django does
    around each request (a worker thread would otherwise keep its connection forever)."""
    if fastq.mux.is_async_handler(handler):
        return handler  # the tasks of this project are plain def functions: they run on worker threads

    def run(task):
        close_old_connections()
        try:
            return handler(task)
        finally:
            close_old_connections()

    return run


app = fastq.App(settings.FASTQ_REDIS_URL, middleware=[django_db])

autodiscover_modules("tasks")  # accounts/tasks.py, ...
