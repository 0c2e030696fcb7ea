import django.db.models.deletion
from django.db import migrations, models

# Foreign keys of messaging_message whose own single-column index this migration drops.
UNINDEXED_FOREIGN_KEYS = ("workspace", "api_key")


def _foreign_key_indexes(schema_editor, model, column: str) -> list[str]:
    """Names of the plain (not unique, not primary key) indexes on exactly `column` of `model`'s table."""
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, model._meta.db_table)
    return [
        name
        for name, info in constraints.items()
        if info["index"] and not info["unique"] and not info["primary_key"] and info["columns"] == [column]
    ]


def drop_foreign_key_indexes(apps, schema_editor):
    model = apps.get_model("messaging", "Message")
    for field_name in UNINDEXED_FOREIGN_KEYS:
        column = model._meta.get_field(field_name).column
        for name in _foreign_key_indexes(schema_editor, model, column):
            schema_editor.execute(schema_editor._delete_index_sql(model, name))


def create_foreign_key_indexes(apps, schema_editor):
    model = apps.get_model("messaging", "Message")
    for field_name in UNINDEXED_FOREIGN_KEYS:
        field = model._meta.get_field(field_name)
        if not _foreign_key_indexes(schema_editor, model, field.column):
            schema_editor.execute(schema_editor._create_index_sql(model, fields=[field]))


class Migration(migrations.Migration):
    """Index diet on messaging_message: 15 indexes become 10 (the primary key and 9 in Message.Meta), so
    storing a message updates 5 B-trees instead of 15 (6 for a scheduled one).

    Kept: accepted_at, (workspace, accepted_at), (status, accepted_at). New, partial: waiting rows
    (status, workspace, channel, next_attempt_at), scheduled rows (scheduled_for, status), sent rows
    (sent_at, workspace, channel, status), failed rows (failed_at, workspace, channel, error_kind,
    status), (channel, error_kind, failed_at, workspace, status) and (accepted_at, status); they
    replace msg_status_ws_chan, msg_status_next, msg_status_sched, msg_sent_live, msg_failed_live and
    msg_failed_groups. Dropped without
    replacement: msg_ws_chan_status, msg_chan_status, msg_chan_accepted (the messages page's channel
    filter walks the accepted_at index) and the foreign-key indexes on workspace (msg_ws_accepted
    starts with it) and api_key (nothing reads messages by key).

    The foreign keys are changed in the migration state only, and their indexes dropped by name as
    the database reports them: an AlterField would make SQLite copy the whole table. Creating the
    partial indexes reads the table once each (a few seconds per million messages); on PostgreSQL
    writes to messaging_message wait meanwhile.
    """

    dependencies = [
        ("messaging", "0003_apikey_all_workspaces"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "accepted"), ("status", "queued"), ("status", "scheduled"), _connector="OR"),
                fields=["status", "workspace", "channel", "next_attempt_at"],
                name="msg_waiting",
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "scheduled")), fields=["scheduled_for", "status"], name="msg_scheduled_for"
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "sent")), fields=["sent_at", "workspace", "channel", "status"], name="msg_sent_at"
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "failed")),
                fields=["failed_at", "workspace", "channel", "error_kind", "status"],
                name="msg_failed_at",
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "failed")),
                fields=["channel", "error_kind", "failed_at", "workspace", "status"],
                name="msg_failed_group",
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "failed")), fields=["accepted_at", "status"], name="msg_failed_accepted"
            ),
        ),
        migrations.RemoveIndex(model_name="message", name="msg_status_next"),
        migrations.RemoveIndex(model_name="message", name="msg_ws_chan_status"),
        migrations.RemoveIndex(model_name="message", name="msg_chan_status"),
        migrations.RemoveIndex(model_name="message", name="msg_status_sched"),
        migrations.RemoveIndex(model_name="message", name="msg_status_ws_chan"),
        migrations.RemoveIndex(model_name="message", name="msg_failed_groups"),
        migrations.RemoveIndex(model_name="message", name="msg_sent_live"),
        migrations.RemoveIndex(model_name="message", name="msg_failed_live"),
        migrations.RemoveIndex(model_name="message", name="msg_chan_accepted"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="api_key",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="messaging.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="message",
                    name="workspace",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="messages",
                        to="messaging.workspace",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_foreign_key_indexes, create_foreign_key_indexes)],
        ),
    ]
