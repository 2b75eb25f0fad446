"""Settings of the example project: one app (accounts), SQLite, and the Redis URL of fastq."""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = ["accounts"]
MIDDLEWARE: list[str] = []  # a JSON API for this example; a site with forms keeps CsrfViewMiddleware
ROOT_URLCONF = "mysite.urls"

DB_PATH = Path(os.environ.get("DJANGO_DB_PATH", BASE_DIR / "db.sqlite3"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DB_PATH,
        # the test database is a file too, so that a worker's threads see what the tests wrote
        "TEST": {"NAME": DB_PATH.with_name(f"test_{DB_PATH.name}")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # the worker prints the mails
DEFAULT_FROM_EMAIL = "welcome@example.com"

# Read by mysite/fastq_app.py: the Redis server of the task queue.
FASTQ_REDIS_URL = os.environ.get("FASTQ_REDIS_URL", "redis://127.0.0.1:6379/0")
