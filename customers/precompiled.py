"""Querysets compiled to SQL once per process, then run with new values.

Django builds and compiles a queryset's SQL on every evaluation. For the few small queries behind an
uncached `GET /customers/{id}` that was most of the request's CPU time. A `PrecompiledQuery` builds
its queryset once per shape with stand-in values, finds where each stand-in landed in the compiled
parameters and, on each call, runs the same SQL with the real values in their places. The queryset
stays the single statement of the rule; only its compilation is reused.

A stand-in that does not come out unchanged in the parameters (a lookup that wraps or transforms
it, such as `icontains`) makes the query refuse to compile: use plain comparisons and `__in`.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.models import QuerySet
from django.db.models.query import get_related_populators
from django.db.models.sql.compiler import SQLCompiler

_PREPARE_ONLY_WHEN_ASKED = 2**62
_MAX_SHAPES = 16  # distinct list lengths kept per query; beyond that, the query is compiled each time


def _stand_in(kind: type) -> Any:
    if kind is uuid.UUID:
        return uuid.uuid4()
    if kind is datetime:
        # A moment no real value shares: a random microsecond count in 1901.
        return datetime(1901, 1, 1, tzinfo=UTC).replace(
            microsecond=secrets.randbelow(10**6), second=secrets.randbelow(60)
        )
    if kind is str:
        return f"\x1fstand-in-{secrets.token_hex(8)}"
    raise TypeError(f"no stand-in for {kind.__name__}")


@dataclass(frozen=True)
class ArrayOf:
    """A value passed as one array parameter (`RawSQL("... %s::uuid[]", (values,))`), whatever its length."""

    kind: type


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple
    slots: tuple[tuple[int, str, int | None], ...]  # (position in params, value name, index in a list or None)
    converters: tuple  # (column, (converter functions, expression)) as SQLCompiler.get_converters gives them
    db: str
    column_names: tuple[str | None, ...]
    # For a model queryset: the model's columns and what select_related joined, as Django's ModelIterable reads them.
    model: type | None
    model_columns: tuple[int, int] | None
    model_attnames: tuple[str, ...]
    related_populators: tuple


class PrecompiledQuery:
    """`build(**values)` returns a queryset; `rows(**values)` runs it as a list of tuples (the columns of
    a values/values_list queryset), `instances(**values)` as model instances.

    `kinds` names each value's type (`uuid.UUID`, `datetime`, `str`), or a one-element list of it
    for a list of values (as `__in` takes): each list length compiles once; `ArrayOf(kind)` for a
    list the queryset passes as one parameter. `prepared=False` for a statement whose generic plan
    (which a prepared statement gets here) is worse than the plan PostgreSQL makes for the values.
    """

    def __init__(
        self, build: Callable[..., QuerySet], *, prepared: bool = True, **kinds: type | list[type] | ArrayOf
    ) -> None:
        self._build = build
        self._prepared = prepared
        self._kinds = kinds
        self._compiled: dict[tuple[int, ...], _Compiled] = {}
        self._lock = threading.Lock()

    def _shape(self, values: dict[str, Any]) -> tuple[int, ...]:
        return tuple(len(values[name]) for name, kind in self._kinds.items() if isinstance(kind, list))

    def _compile(self, values: dict[str, Any]) -> _Compiled:
        stand_ins: dict[str, Any] = {}
        arrays: dict[int, str] = {}  # id() of an array stand-in -> its name: it is found by identity
        for name, kind in self._kinds.items():
            if isinstance(kind, ArrayOf):
                stand_ins[name] = [_stand_in(kind.kind)]
                arrays[id(stand_ins[name])] = name
            elif isinstance(kind, list):
                stand_ins[name] = [_stand_in(kind[0]) for _ in values[name]]
            else:
                stand_ins[name] = _stand_in(kind)
        queryset = self._build(**stand_ins)
        compiler: SQLCompiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        where: dict[Any, tuple[str, int | None]] = {("array", name): (name, None) for name in arrays.values()}
        for name, stand_in in stand_ins.items():
            if name not in arrays.values():
                for index, item in enumerate(stand_in) if isinstance(stand_in, list) else [(None, stand_in)]:
                    where[_key(item)] = (name, index)
        slots = []
        for position, param in enumerate(params):
            key = ("array", arrays[id(param)]) if id(param) in arrays else _key(param)
            if key in where:
                slots.append((position, *where[key]))
        missing = set(where.values()) - {(name, index) for _, name, index in slots}
        if missing:
            raise ValueError(f"stand-ins {sorted(map(str, missing))} did not reach the SQL parameters unchanged")
        columns = [expression for expression, _, _ in compiler.select[: compiler.col_count]]
        converters = tuple(compiler.get_converters(columns).items())
        model, model_columns, attnames, populators = None, None, (), ()
        if compiler.klass_info and not queryset.query.values_select and not compiler.annotation_col_map:
            select_fields = compiler.klass_info["select_fields"]
            model = compiler.klass_info["model"]
            model_columns = (select_fields[0], select_fields[-1] + 1)
            attnames = tuple(column[0].target.attname for column in compiler.select[slice(*model_columns)])
            populators = tuple(get_related_populators(compiler.klass_info, compiler.select, queryset.db))
        return _Compiled(
            sql=sql,
            params=tuple(params),
            slots=tuple(slots),
            converters=converters,
            db=queryset.db,
            column_names=tuple(alias for _, _, alias in compiler.select[: compiler.col_count]),
            model=model,
            model_columns=model_columns,
            model_attnames=attnames,
            related_populators=populators,
        )

    def compiled(self, **values: Any) -> _Compiled:
        shape = self._shape(values)
        found = self._compiled.get(shape)
        if found is None:
            found = self._compile(values)
            with self._lock:
                if len(self._compiled) < _MAX_SHAPES:
                    self._compiled[shape] = found
        return found

    def rows(self, **values: Any) -> list[tuple]:
        return self._rows(self.compiled(**values), values)

    def dicts(self, **values: Any) -> list[dict[str, Any]]:
        """`rows`, each as {column: value} (a values() queryset's names)."""
        compiled = self.compiled(**values)
        return [dict(zip(compiled.column_names, row, strict=True)) for row in self._rows(compiled, values)]

    def instances(self, **values: Any) -> list:
        """For a model queryset (select_related included): its model instances, as iterating it gives them."""
        compiled = self.compiled(**values)
        if compiled.model is None:
            raise TypeError("instances() needs a model queryset without values() or annotations")
        start, end = compiled.model_columns
        found = []
        for row in self._rows(compiled, values):
            instance = compiled.model.from_db(compiled.db, compiled.model_attnames, row[start:end])
            for populator in compiled.related_populators:
                populator.populate(row, instance)
            found.append(instance)
        return found

    def _rows(self, compiled: _Compiled, values: dict[str, Any]) -> list[tuple]:
        params = list(compiled.params)
        for position, name, index in compiled.slots:
            params[position] = values[name] if index is None else values[name][index]
        connection = connections[compiled.db]
        if self._prepared:
            rows = _run(connection, compiled.sql, params)
        else:
            with connection.cursor() as cursor:
                cursor.execute(compiled.sql, params)
                rows = cursor.fetchall()
        if not compiled.converters:
            return rows
        converted = []
        for row in rows:
            row = list(row)
            for column, (functions, expression) in compiled.converters:
                value = row[column]
                for convert in functions:
                    value = convert(value, expression, connection)
                row[column] = value
            converted.append(tuple(row))
        return converted


class _PreparingCursor(ServerBindingCursor):
    """Sends the values apart from the SQL and prepares the statement on the connection: PostgreSQL
    then skips planning, which took ten times longer than running these small queries. (Django turns
    psycopg's automatic preparing off for connection poolers; the few statements here are prepared
    on purpose. A pooler in transaction mode must support prepared statements: PgBouncer 1.21+.)"""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)


def _run(connection, sql: str, params: list) -> list[tuple]:
    """Runs the statement on a `_PreparingCursor`, with the health and thread checks of `connection.cursor()`.

    Logged (DEBUG, tests counting queries) as Django's own cursors log: psycopg keeps no text of a
    prepared execution for Django's debug cursor to read. (The project's other cursors bind on the
    client: some of their raw SQL leaves parameter types for PostgreSQL to infer, which server-side
    binding refuses.)
    """
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    if connection.connection.prepare_threshold is None:
        # Django's None also refuses `prepare=True`; a threshold never reached lets only these prepare
        # (the client-binding cursors never prepare).
        connection.connection.prepare_threshold = _PREPARE_ONLY_WHEN_ASKED
    started = time.monotonic()
    with connection.make_cursor(_PreparingCursor(connection.connection)) as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if connection.queries_logged:
        duration = time.monotonic() - started
        connection.queries_log.append({"sql": connection.ops.compose_sql(sql, params), "time": f"{duration:.3f}"})
    return rows


def _key(value: Any) -> tuple[type, Any] | None:
    """Stand-ins are compared by type and value: a str stand-in never equals a UUID one."""
    try:
        hash(value)
    except TypeError:  # a list or dict parameter: never a stand-in
        return None
    return type(value), value


def as_uuids(values: Sequence[Any]) -> list[uuid.UUID]:
    """Customer ids as `uuid.UUID` (what a precompiled query's slots take); ValueError for a malformed one."""
    return [value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)) for value in values]
