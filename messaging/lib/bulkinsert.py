"""Fast multi-row INSERT and UPDATE for model instances: the bulk write paths (bulk sends, batch jobs).

Django's `bulk_create` prepares every field of every row through the full field API and, on SQLite,
splits 1,000 messages into dozens of statements (at most 999 parameters each). Profiling the bulk
endpoint showed that preparation cost more than the database work itself. `insert_rows` prepares
each column with the field's own `get_db_prep_save` only where the type needs it (dates, UUIDs,
JSON), passes strings and integers through, and hands all rows to the driver's `executemany` in one
call (sqlite3 runs it as one prepared statement). On PostgreSQL the rows go in one `COPY ... FROM
STDIN` instead: Django's psycopg cursor binds parameters on the client, so `executemany` sent each row
as its own statement for the server to parse and plan, which cost more than storing the rows.

`new_instances` builds the unsaved instances themselves without the per-field work of `Model.__init__`
(which took as long as the preparation did).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, models, router
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
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


def _memoized(prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`prepare` remembering its answer per value: rows of one bulk write share a few timestamps."""
    known: dict[Any, Any] = {}

    def prepare_once(value: Any) -> Any:
        try:
            return known[value]
        except KeyError:
            result = known[value] = prepare(value)
            return result

    return prepare_once


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    copy_sql: str  # PostgreSQL
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
        table = quote(meta.db_table)
        columns = ", ".join(quote(field.column) for field in fields)
        # Table and column names come from the model's metadata; every value is a query parameter.
        sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
            table, columns, ", ".join(["%s"] * len(fields))
        )
        plan = _plans[key] = _InsertPlan(
            sql=sql,
            copy_sql=f"COPY {table} ({columns}) FROM STDIN",
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


@dataclass(frozen=True)
class PreparedRows:
    """Instances and their rows converted for the driver (prepare_rows), to write with write_rows."""

    objs: Sequence[models.Model]
    db: str
    plan: _InsertPlan | None
    rows: list[list[Any]]


def prepare_rows(objs: Sequence[models.Model], *, using: str | None = None) -> PreparedRows:
    """Convert `objs` (unsaved instances of one model, primary keys already set) into driver values.

    `auto_now` fields, and `auto_now_add` fields the caller left empty, get one timestamp (now, UTC)
    for all rows, as `save()` would give each (a caller that sets `auto_now_add` itself, e.g. to the
    same instant as other times it records, keeps its value). A field changed afterwards is not
    written. Needs no transaction: a caller can convert before it starts one and write inside it.
    """
    if not objs:
        return PreparedRows(objs, using or "", None, [])
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
    preparers = [
        (i, _memoized(prep) if isinstance(field, models.DateField) else prep)
        for i, field in plan.prepared_fields
        if (prep := _preparer(field, connection)) is not None
    ]
    rows = []
    for obj in objs:
        row = list(plan.values_of(obj))
        for i, prep in preparers:
            row[i] = prep(row[i])
        rows.append(row)
    return PreparedRows(objs, db, plan, rows)


def write_rows(prepared: PreparedRows) -> None:
    """INSERT rows from prepare_rows in one `executemany`, or on PostgreSQL one COPY, and mark their
    instances saved.

    Raises django.db.DatabaseError (e.g. IntegrityError) from the driver; the caller's transaction
    then rolls back every row. The COPY bypasses Django's cursor wrappers: it is not in
    `connection.queries` and execute wrappers do not see it.
    """
    if prepared.plan is None:
        return
    connection = connections[prepared.db]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and hasattr(cursor.cursor, "copy"):
            with connection.wrap_database_errors, cursor.cursor.copy(prepared.plan.copy_sql) as copy:
                for row in prepared.rows:
                    copy.write_row(row)
        else:
            cursor.executemany(prepared.plan.sql, prepared.rows)
    for obj in prepared.objs:
        obj._state.adding = False
        obj._state.db = prepared.db


def insert_rows(objs: Sequence[models.Model], *, using: str | None = None) -> None:
    """INSERT `objs` (unsaved instances of one model, primary keys already set): prepare_rows, then
    write_rows (which say what is set and what is raised)."""
    write_rows(prepare_rows(objs, using=using))


@dataclass(frozen=True)
class _BuildPlan:
    defaults: dict[str, Any]  # attname -> the default every instance starts with
    factories: tuple[tuple[str, Callable[[], Any]], ...]  # attname -> callable default (uuid4, dict)
    relations: dict[str, models.Field]  # name of a forward foreign key -> its field
    attnames: frozenset[str]


_build_plans: dict[type, _BuildPlan] = {}


def _build_plan(model: type[models.Model]) -> _BuildPlan:
    plan = _build_plans.get(model)
    if plan is None:
        fields = model._meta.concrete_fields
        factories = tuple((f.attname, f.default) for f in fields if f.has_default() and callable(f.default))
        made = {attname for attname, _ in factories}
        plan = _build_plans[model] = _BuildPlan(
            # What Model.__init__ sets for an absent field: its default, '' or None (get_default).
            defaults={f.attname: f.get_default() for f in fields if f.attname not in made},
            factories=factories,
            relations={f.name: f for f in fields if f.is_relation and f.many_to_one},
            attnames=frozenset(f.attname for f in fields),
        )
    return plan


def new_instances(model: type[models.Model], rows: Sequence[dict[str, Any]]) -> list[models.Model]:
    """Unsaved instances of `model`, one per dict of field values, as `model(**values)` would build them.

    Keys are field names or attnames; a forward foreign key given by name takes an instance (or None)
    and caches it on the new instance, as assignment does. Fields left out get their defaults (a
    callable default is called per instance). Raises TypeError for a key that is not a concrete
    field. While pre_init or post_init has receivers for `model`, this calls `model(**values)`.
    """
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        return [model(**values) for values in rows]
    plan = _build_plan(model)
    new = object.__new__
    objs = []
    for values in rows:
        obj = new(model)
        state = ModelState()
        attrs = obj.__dict__
        attrs.update(plan.defaults)
        attrs["_state"] = state
        for name, value in values.items():
            field = plan.relations.get(name)
            if field is not None:
                attrs[field.attname] = None if value is None else getattr(value, field.target_field.attname)
                if value is not None:
                    field.set_cached_value(obj, value)
            elif name in plan.attnames:
                attrs[name] = value
            else:
                raise TypeError(f"{model.__name__} got an unexpected field {name!r}")
        for attname, factory in plan.factories:
            if attname not in values:
                attrs[attname] = factory()
        objs.append(obj)
    return objs


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
