from __future__ import annotations

from django.core.management.base import BaseCommand

from messaging.workspaces import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it once, alone on the last line. Only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the key is for, e.g. the client's name.")
        parser.add_argument(
            "--workspace",
            action="append",
            default=[],
            metavar="ID",
            help="Limit the key to this workspace ID (repeat for several). Default: every workspace.",
        )

    def handle(self, *args, **options):
        key, full_key = api_key_create(name=options["name"], workspace_ids=options["workspace"])
        scope = ", ".join(options["workspace"]) or "all workspaces"
        self.stdout.write(f"Created API key {key.name!r} (prefix {key.prefix}) for {scope}.")
        self.stdout.write("Store it now: it cannot be shown again.")
        self.stdout.write(full_key)
