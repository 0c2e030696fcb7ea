from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from messaging.workspaces import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key and print it once, alone on the last line. Only its hash is stored. The scope "
        "is explicit: --all-workspaces, or one --workspace per workspace the key may use."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="What the key is for, e.g. the client's name.")
        parser.add_argument(
            "--workspace",
            action="append",
            default=[],
            metavar="ID",
            help="Limit the key to this workspace ID (repeat for several).",
        )
        parser.add_argument(
            "--all-workspaces",
            action="store_true",
            help="The key may use every workspace, including ones created later.",
        )

    def handle(self, *args, **options):
        workspace_ids, every = options["workspace"], options["all_workspaces"]
        if every and workspace_ids:
            raise CommandError("Give --all-workspaces or --workspace, not both.")
        if not every and not workspace_ids:
            raise CommandError(
                "Say which workspaces the key may use: --all-workspaces or --workspace ID (repeatable)."
            )
        key, full_key = api_key_create(
            name=options["name"], workspace_ids=workspace_ids, all_workspaces=every
        )
        scope = "every workspace" if every else "workspaces " + ", ".join(workspace_ids)
        self.stdout.write(f"Created API key {key.name!r} (prefix {key.prefix}) for {scope}.")
        self.stdout.write("Store it now: it cannot be shown again.")
        self.stdout.write(full_key)
