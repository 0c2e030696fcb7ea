"""Settings of the plain Django project that is the ingest benchmark's floor (bench/run.py, ingest).

What `django-admin startproject` gives, less what one JSON view does not need, so the floor is what
Django itself costs per request under the service's gunicorn settings (config/gunicorn.py):
- INSTALLED_APPS: none. startproject's admin, auth, contenttypes, sessions, messages and staticfiles
  serve pages, users and files; a JSON view uses none of them, and auth and sessions need a database.
- MIDDLEWARE: SecurityMiddleware and CommonMiddleware (kept: every deployed Django runs them, and
  CommonMiddleware validates the Host header). Dropped: SessionMiddleware, CsrfViewMiddleware,
  AuthenticationMiddleware, MessageMiddleware (no session, form or user) and
  XFrameOptionsMiddleware (a JSON answer is never framed).
- DATABASES: none; nothing is stored.
"""

from __future__ import annotations

import os

# bench/run.py passes a fresh SECRET_KEY; the fallback only lets `python -c "import ..."` work.
SECRET_KEY = os.environ.get("SECRET_KEY", "plain-bench-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "bench.plain.urls"
WSGI_APPLICATION = "bench.plain.wsgi.application"
DATABASES: dict = {}

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False
