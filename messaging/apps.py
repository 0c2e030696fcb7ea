from __future__ import annotations

from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Messaging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Every process that loads Django (web, rqworker and its work horses, rqscheduler, management
        # commands) masks phone numbers and email addresses in every log record it creates.
        from .lib.pii import install_log_masking

        install_log_masking()
