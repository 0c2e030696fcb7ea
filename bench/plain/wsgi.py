"""WSGI entry point of the plain Django project (`gunicorn -c config/gunicorn.py bench.plain.wsgi`,
from the repository root, with DJANGO_SETTINGS_MODULE=bench.plain.settings)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.plain.settings")
application = get_wsgi_application()
