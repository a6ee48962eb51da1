"""SQL written once, with the data contract's logical names, for any source.

Report queries are plain SQL text (read as DuckDB's dialect) because they are
easier to review than expression builders; :func:`portable` maps each logical
table and each column qualified by a table alias to the project's physical
names (``data_source.tables``) and transpiles the result with sqlglot to the
source's dialect, as segments and facts do.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlglot
from sqlglot import exp

from ..datacontract import CONTRACT
from ..model import Project

NEUTRAL = "duckdb"


def portable(sql: str, project: Project, dialect: str) -> str:
    tree = sqlglot.parse_one(sql, read=NEUTRAL)
    mapping = project.data_source
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        logical = table.name
        if logical in CONTRACT and not table.db:
            aliases[table.alias_or_name] = logical
            table.set("this", exp.to_identifier(mapping.table(logical).table, quoted=True))
    for column in tree.find_all(exp.Column):
        logical_table = aliases.get(column.table)
        if logical_table is not None:
            column.set("this", exp.to_identifier(mapping.table(logical_table).column(column.name), quoted=True))
    return tree.sql(dialect=dialect)


def timestamp(value: datetime) -> str:
    """A UTC instant every dialect reads (as facts.py writes it)."""
    return f"CAST('{value.astimezone(timezone.utc).isoformat(sep=' ')}' AS TIMESTAMPTZ)"
