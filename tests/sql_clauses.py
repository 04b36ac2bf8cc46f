"""Just enough of a SQL reader to find the status writes in the store's statements: tokens, the clauses of
``UPDATE``/``INSERT``, and where a value written comes from. Not a parser of SQL in general."""

import re
from dataclasses import dataclass

OPAQUE = "opaque"
"""A token kind for a part of an f-string the test could not evaluate (it depends on a function's locals)."""

_TOKEN = re.compile(r"""
    (?P<space>\s+|--[^\n]*)
  | (?P<str>[Ee]'(?:[^'\\]|''|\\.)*'|'(?:[^']|'')*')
  | (?P<param>\$\d+)
  | (?P<opaque>\x00[^\x00]*\x00)
  | (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<op>::|<>|!=|<=|>=|->>|->|@>|\|\||!~|[=<>+\-*/%~^.,()\[\];:{}])
""", re.VERBOSE)


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.upper() in words

    @property
    def value(self) -> str:
        """A string literal's value."""
        body = self.text[2:-1] if self.text[0] in "Ee" else self.text[1:-1]
        return body.replace("''", "'")


def tokenize(sql: str) -> list[Tok]:
    out: list[Tok] = []
    pos = 0
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None:
            raise ValueError(f"cannot read SQL at {sql[pos:pos + 40]!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        if kind != "space":
            out.append(Tok(kind, m.group()))
    return out


def opaque_marker(source: str) -> str:
    """How an f-string part that cannot be evaluated is rendered into the SQL text."""
    return "\x00" + source.replace("\x00", "") + "\x00"


def depths(toks: list[Tok]) -> list[int]:
    """The parenthesis depth of each token (a closing parenthesis has the depth of its contents' outside)."""
    out, depth = [], 0
    for t in toks:
        if t.text == ")":
            depth -= 1
        out.append(depth)
        if t.text == "(":
            depth += 1
    return out


def until(toks: list[Tok], start: int, stop_words: tuple[str, ...]) -> int:
    """Index of the first token from ``start`` at ``start``'s depth that is one of ``stop_words``, or where
    that depth closes, or the end."""
    depth = 0
    for i in range(start, len(toks)):
        t = toks[i]
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            if depth == 0:
                return i
            depth -= 1
        elif depth == 0 and (t.is_kw(*stop_words) or t.text == ";"):
            return i
    return len(toks)


def split_top(toks: list[Tok], sep: str) -> list[list[Tok]]:
    """Split at top-level ``sep`` (a comma, or a keyword such as AND)."""
    parts: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        if depth == 0 and (t.text == sep or t.is_kw(sep)):
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def strip(expr: list[Tok]) -> list[Tok]:
    """An expression without its outer parentheses and trailing casts (``::text[]``)."""
    while True:
        array = len(expr) >= 2 and expr[-2].text == "[" and expr[-1].text == "]"
        if array or (len(expr) >= 2 and expr[-2].text == "::" and expr[-1].kind == "ident"):
            expr = expr[:-2]
        elif len(expr) >= 2 and expr[0].text == "(" and expr[-1].text == ")" and _wraps(expr):
            expr = expr[1:-1]
        else:
            return expr


def _wraps(expr: list[Tok]) -> bool:
    return all(d > 0 for d in depths(expr)[1:-1]) and depths(expr)[-1] == 0


def case_branches(expr: list[Tok]) -> list[list[Tok]] | None:
    """The THEN and ELSE values of a ``CASE ... END``, or None when ``expr`` is not one."""
    if not (expr and expr[0].is_kw("CASE") and expr[-1].is_kw("END")):
        return None
    branches: list[list[Tok]] = []
    current: list[Tok] | None = None
    depth = nested = 0
    for t in expr[1:-1]:
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
        top = depth == 0 and nested == 0
        if t.is_kw("CASE"):
            nested += 1
        elif t.is_kw("END"):
            nested -= 1
        if top and t.is_kw("THEN", "ELSE"):
            current = []
            branches.append(current)
        elif top and t.is_kw("WHEN"):
            current = None
        elif current is not None:
            current.append(t)
    return branches


@dataclass
class Write:
    """One statement's write of a status column: the value written and, for an UPDATE, its WHERE."""

    kind: str  # "update" or "insert"
    table: str
    names: tuple[str, ...]  # how the statement may call the row written: the table and its alias
    value: list[Tok] | None  # None: an INSERT leaving the column to its default
    where: list[Tok]
    opaque_columns: bool  # a SET or column list built at run time (the column might be among them)


def _table_and_alias(toks: list[Tok], i: int) -> tuple[str, tuple[str, ...], int]:
    table = toks[i].text
    i += 1
    if i < len(toks) and toks[i].is_kw("AS"):
        i += 1
    if i < len(toks) and toks[i].kind == "ident" and not toks[i].is_kw("SET", "VALUES", "SELECT"):
        return table, (table, toks[i].text), i + 1
    return table, (table,), i


def _set_items(toks: list[Tok]) -> list[tuple[str, list[Tok]]]:
    items = []
    for part in split_top(toks, ","):
        eq = next((k for k, t in enumerate(part) if t.text == "="), None)
        if eq is not None and eq >= 1:
            items.append((part[eq - 1].text, part[eq + 1:]))
    return items


def updates(toks: list[Tok], columns: dict[str, str]) -> list[Write]:
    """Every ``UPDATE`` (and ``ON CONFLICT DO UPDATE``) in the statement that sets a column of ``columns``
    (table -> its status column)."""
    found = []
    for i, t in enumerate(toks):
        if not t.is_kw("UPDATE") or (i > 0 and toks[i - 1].is_kw("FOR", "KEY")):  # a row lock, not a write
            continue
        if i + 1 < len(toks) and toks[i + 1].is_kw("SET"):  # ON CONFLICT ... DO UPDATE SET
            insert = max(k for k in range(i) if toks[k].is_kw("INSERT"))
            table, names, _ = _table_and_alias(toks, insert + 2)
            names = (*names, "EXCLUDED")
            j = i + 1
        else:
            table, names, j = _table_and_alias(toks, i + 1)
        if table not in columns or not toks[j].is_kw("SET"):
            continue
        end_set = until(toks, j + 1, ("FROM", "WHERE", "RETURNING"))
        set_toks = toks[j + 1:end_set]
        where: list[Tok] = []
        k = end_set
        if k < len(toks) and toks[k].is_kw("FROM"):
            k = until(toks, k + 1, ("WHERE", "RETURNING"))
        if k < len(toks) and toks[k].is_kw("WHERE"):
            where = toks[k + 1:until(toks, k + 1, ("RETURNING",))]
        opaque = any(x.kind == OPAQUE for x in set_toks)
        values = [v for col, v in _set_items(set_toks) if col == columns[table]]
        if values or opaque:
            found.append(Write("update", table, names, values[0] if values else None, where, opaque))
    return found


def inserts(toks: list[Tok], columns: dict[str, str]) -> list[Write]:
    """Every ``INSERT INTO`` one of ``columns``' tables, with the value of its status column (None: default)."""
    found = []
    for i, t in enumerate(toks):
        if not (t.is_kw("INSERT") and i + 2 < len(toks) and toks[i + 1].is_kw("INTO")):
            continue
        table, names, j = _table_and_alias(toks, i + 2)
        if table not in columns:
            continue
        if toks[j].text != "(":
            raise ValueError(f"INSERT INTO {table} must name its columns")
        close = until(toks, j + 1, ())
        cols = [c[0].text if c else "" for c in split_top(toks[j + 1:close], ",")]
        opaque = any(x.kind == OPAQUE for x in toks[j + 1:close])
        k = close + 1
        if toks[k].is_kw("VALUES"):
            exprs = split_top(toks[k + 2:until(toks, k + 2, ())], ",")
        elif toks[k].is_kw("SELECT"):
            exprs = split_top(toks[k + 1:until(toks, k + 1, ("FROM", "WHERE", "ON", "RETURNING"))], ",")
        else:
            raise ValueError(f"INSERT INTO {table}: cannot read its values")
        col = columns[table]
        value = exprs[cols.index(col)] if col in cols else None
        found.append(Write("insert", table, names, value, [], opaque))
    return found


def column_source(toks: list[Tok], column: str) -> list[Tok] | tuple[int, int] | None:
    """Where a column a statement reads (``cur.new_state``, ``i.outcome``) is defined in it: the expression
    named ``AS column`` in a select list, or (unnest argument count, position) for a column of
    ``unnest(...) AS t(..., column, ...)``; None when neither."""
    d = depths(toks)
    for i in range(1, len(toks) - 1):
        if not (toks[i].is_kw("AS") and toks[i + 1].text == column):
            continue
        start = i - 1
        while start > 0 and not (d[start - 1] == d[i] and (toks[start - 1].text == ","
                                                            or toks[start - 1].is_kw("SELECT"))):
            start -= 1
        return toks[start:i]
    for i in range(1, len(toks) - 2):
        if toks[i].is_kw("AS") and toks[i + 2].text == "(" and toks[i - 1].text == ")":
            close = until(toks, i + 3, ())
            names = [p[0].text for p in split_top(toks[i + 3:close], ",") if p]
            if column in names:
                return names.index(column), i - 1
    return None


def unnest_arg(toks: list[Tok], close: int, position: int) -> list[Tok]:
    """The ``position``-th argument of the call whose closing parenthesis is at ``close``."""
    depth = 0
    for k in range(close, -1, -1):
        if toks[k].text == ")":
            depth += 1
        elif toks[k].text == "(":
            depth -= 1
            if depth == 0:
                return split_top(toks[k + 1:close], ",")[position]
    raise ValueError("unbalanced parentheses")


def conjuncts(where: list[Tok]) -> list[list[Tok]]:
    """The top-level AND terms of a WHERE clause (the whole clause when it has a top-level OR)."""
    d = depths(where)
    if any(t.is_kw("OR") and d[k] == 0 for k, t in enumerate(where)):
        return [where]
    return split_top(where, "AND")


def any_param(term: list[Tok]) -> tuple[list[Tok], int] | None:
    """``<expr> = ANY($n ...)`` -> (expr, n); None for any other term."""
    term = strip(term)
    for k, t in enumerate(term):
        if (t.text == "=" and k + 3 < len(term) and term[k + 1].is_kw("ANY") and term[k + 2].text == "("
                and term[k + 3].kind == "param" and term[-1].text == ")"):
            return term[:k], int(term[k + 3].text[1:])
    return None


def literal_comparisons(where: list[Tok], column: str, names: tuple[str, ...]) -> list[str]:
    """Comparisons of the written row's status column with literals (a hard-coded guard), as text."""
    found = []
    for k, t in enumerate(where):
        if t.kind != "ident" or t.text != column:
            continue
        if k >= 2 and where[k - 1].text == "." and where[k - 2].text not in names:
            continue  # another row's column (a subquery, a joined table)
        j = k + 2 if k + 1 < len(where) and where[k + 1].is_kw("NOT") else k + 1
        after = where[j:j + 3]
        compared = len(after) >= 2 and after[0].text in ("=", "<>", "!=") and after[1].kind == "str"
        listed = len(after) == 3 and after[0].is_kw("IN") and after[1].text == "(" and after[2].kind == "str"
        if compared or listed:
            found.append(" ".join(x.text for x in where[k:j + 3]))
    return found
