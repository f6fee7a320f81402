"""Core statements compiled once for a dialect and run on the DB-API connection. On SQLite's writer
thread a statement costs SQLite a microsecond or two; SQLAlchemy's execution machinery (parameter
construction, execution context, result object) costs it 20-40 more, on the thread that shares the
GIL with the event loop. The statements stay SQLAlchemy Core, written once for every backend; only
their execution skips the machinery. Values go through the column types' own bind and result
processors (JSON text in and out, booleans), so what is stored and read is what SQLAlchemy would."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


class Prepared:
    """One statement for one dialect with a positional ("qmark") paramstyle. Parameters are passed
    by name; an expanding one (`IN :names`) takes a non-empty list."""

    def __init__(self, statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None) -> None:
        # `keys`: the columns an INSERT gets values for (its VALUES clause).
        compiled = cast(
            SQLCompiler, statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
        )
        if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
            raise ValueError("a column default would be computed in Python: pass every column's value")
        names = compiled.positiontup or []
        binds = compiled.binds
        # Per position: the caller's parameter (None) or the value the statement holds (literals).
        self._fixed = [None if binds[n].required else (binds[n].effective_value,) for n in names]
        self._names = names
        self._bind = [binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
        self._expanding = [binds[n].expanding for n in names]
        self._sql = compiled.string
        if self._sql.count("__[POSTCOMPILE_") != sum(self._expanding):
            raise ValueError("a parameter the dialect renders at execution time (not an IN list)")
        self._by_length: dict[tuple[int, ...], str] = {}
        columns = list(getattr(statement, "exported_columns", ()))
        self.columns = [c.key for c in columns]
        self._result: list[Processor] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ]

    def params(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQL and its positional parameters for `values`."""
        out: list[Any] = []
        lengths: list[int] = []
        plan = zip(self._names, self._fixed, self._bind, self._expanding, strict=True)
        for name, fixed, bind, expanding in plan:
            value = values[name] if fixed is None else fixed[0]
            if expanding:
                if not value:
                    raise ValueError(f"{name}: an IN list needs at least one value")
                lengths.append(len(value))
                out += [bind(v) for v in value] if bind else value
            else:
                out.append(bind(value) if bind else value)
        return self._sql_for(tuple(lengths), values), tuple(out)

    def _sql_for(self, lengths: tuple[int, ...], values: Mapping[str, Any]) -> str:
        if not lengths:
            return self._sql
        sql = self._by_length.get(lengths)
        if sql is None:
            sql = self._sql
            expanded = (n for n, e in zip(self._names, self._expanding, strict=True) if e)
            for name, length in zip(expanded, lengths, strict=True):
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * length), 1)
            self._by_length[lengths] = sql
        return sql

    def execute(self, raw: Any, values: Mapping[str, Any]) -> Any:
        """Run on a DB-API connection; the cursor."""
        return raw.execute(*self.params(values))

    def executemany(self, raw: Any, rows: Iterable[Mapping[str, Any]]) -> None:
        """Run once per row (a statement without IN lists: one SQL text for every row)."""
        if any(self._expanding):
            raise ValueError("executemany of a statement with an IN list")
        raw.executemany(self._sql, [self.params(row)[1] for row in rows])

    def rows(self, cursor: Any) -> list[dict[str, Any]]:
        """The cursor's rows by column, values as the column types read them."""
        out = []
        for row in cursor.fetchall():
            values = [p(v) if p else v for p, v in zip(self._result, row, strict=True)]
            out.append(dict(zip(self.columns, values, strict=True)))
        return out
