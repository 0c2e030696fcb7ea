"""Fast multi-row INSERT and UPDATE for model instances: the bulk write paths (bulk sends, batch jobs).

Django's `bulk_create` prepares every field of every row through the full field API and, on SQLite,
splits 1,000 messages into dozens of statements (at most 999 parameters each). Profiling the bulk
endpoint showed that preparation cost more than the database work itself. `insert_rows` prepares
each column with the field's own `get_db_prep_save` only where the type needs it (dates, UUIDs,
JSON), passes strings and integers through, and hands all rows to the driver's `executemany` in one
call (sqlite3 and psycopg both run it as one prepared statement).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, models, router
from django.utils import timezone

# Field types whose Python value is already what the database driver takes.
_PASS_THROUGH = {
    "AutoField",
    "BigAutoField",
    "BigIntegerField",
    "BooleanField",
    "CharField",
    "IntegerField",
    "PositiveIntegerField",
    "PositiveSmallIntegerField",
    "SmallIntegerField",
    "TextField",
}


def _preparer(field: models.Field, connection: Any) -> Callable[[Any], Any] | None:
    """Return a function turning a field value into a driver value, or None when it passes as is.

    A foreign key passes as its target's type does (an integer id, here).
    """
    target = field.target_field if field.is_relation else field
    if target.get_internal_type() in _PASS_THROUGH:
        return None
    if isinstance(field, models.JSONField):
        return lambda value: field.get_db_prep_save(value, connection)
    # NULL is NULL for every other type (most dates of a new message are still empty).
    return lambda value: None if value is None else field.get_db_prep_save(value, connection)


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    auto_now_attnames: tuple[str, ...]  # set on every insert
    auto_now_add_attnames: tuple[str, ...]  # set when the instance has no value yet
    values_of: Callable[[Any], tuple]
    prepared_fields: tuple[tuple[int, models.Field], ...]


_plans: dict[tuple[type, str], _InsertPlan] = {}


def _insert_plan(model: type[models.Model], connection: Any) -> _InsertPlan:
    """The INSERT statement and column handling for `model` on `connection`, worked out once."""
    key = (model, connection.alias)
    plan = _plans.get(key)
    if plan is None:
        meta = model._meta
        fields = [
            f
            for f in meta.concrete_fields
            if not (f.primary_key and f.get_internal_type().endswith("AutoField"))
        ]
        quote = connection.ops.quote_name
        # Table and column names come from the model's metadata; every value is a query parameter.
        sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
            quote(meta.db_table),
            ", ".join(quote(field.column) for field in fields),
            ", ".join(["%s"] * len(fields)),
        )
        plan = _plans[key] = _InsertPlan(
            sql=sql,
            auto_now_attnames=tuple(f.attname for f in fields if getattr(f, "auto_now", False)),
            auto_now_add_attnames=tuple(
                f.attname
                for f in fields
                if getattr(f, "auto_now_add", False) and not getattr(f, "auto_now", False)
            ),
            values_of=operator.attrgetter(*(field.attname for field in fields)),
            prepared_fields=tuple((i, f) for i, f in enumerate(fields) if _preparer(f, connection)),
        )
    return plan


def insert_rows(objs: Sequence[models.Model], *, using: str | None = None) -> None:
    """INSERT `objs` (unsaved instances of one model, primary keys already set) in one `executemany`.

    `auto_now` fields, and `auto_now_add` fields the caller left empty, get one timestamp (now, UTC)
    for all rows, as `save()` would give each (a caller that sets `auto_now_add` itself, e.g. to the
    same instant as other times it records, keeps its value). After the call the instances are marked saved. Raises django.db.DatabaseError (e.g.
    IntegrityError) from the driver; the caller's transaction then rolls back every row.
    """
    if not objs:
        return
    model = type(objs[0])
    db = using or router.db_for_write(model)
    connection = connections[db]
    plan = _insert_plan(model, connection)
    now = timezone.now()
    for attname in plan.auto_now_attnames:
        for obj in objs:
            setattr(obj, attname, now)
    for attname in plan.auto_now_add_attnames:
        for obj in objs:
            if getattr(obj, attname) is None:
                setattr(obj, attname, now)
    preparers = [(i, _preparer(field, connection)) for i, field in plan.prepared_fields]
    rows = []
    for obj in objs:
        row = list(plan.values_of(obj))
        for i, prep in preparers:
            row[i] = prep(row[i])
        rows.append(row)
    with connection.cursor() as cursor:
        cursor.executemany(plan.sql, rows)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = db


def update_rows(
    model: type[models.Model],
    field_names: Sequence[str],
    rows: Sequence[tuple[Any, Sequence[Any]]],
    *,
    where: dict[str, Any] | None = None,
    using: str | None = None,
) -> None:
    """UPDATE many rows of `model` with one `executemany`: for each (primary key, values), set
    `field_names` to `values` where the primary key matches and every `where` field equals its value.

    Rows that no longer match `where` are left alone (a conditional update, as `filter().update()`).
    Raises django.db.DatabaseError from the driver.
    """
    if not rows:
        return
    meta = model._meta
    db = using or router.db_for_write(model)
    connection = connections[db]
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in field_names]
    conditions = [(meta.get_field(name), value) for name, value in (where or {}).items()]
    preparers = [_preparer(field, connection) for field in fields]
    condition_values = [
        value if (prep := _preparer(field, connection)) is None else prep(value)
        for field, value in conditions
    ]
    pk_field = meta.pk
    # Table and column names come from the model's metadata; every value is a query parameter.
    sql = "UPDATE {} SET {} WHERE {} = %s{}".format(  # noqa: S608
        quote(meta.db_table),
        ", ".join(f"{quote(field.column)} = %s" for field in fields),
        quote(pk_field.column),
        "".join(f" AND {quote(field.column)} = %s" for field, _ in conditions),
    )
    params = [
        (
            *(value if prep is None else prep(value) for value, prep in zip(values, preparers, strict=True)),
            pk_field.get_db_prep_value(pk, connection),
            *condition_values,
        )
        for pk, values in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
