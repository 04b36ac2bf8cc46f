"""Finds every status write in a store module, from its source, and checks it against the state tables.

A write is an ``UPDATE`` that sets a status column or an ``INSERT`` into a table with one, in any SQL the
module runs (``conn.fetch/fetchrow/fetchval/execute``). Its targets come from the SQL (a literal, the
branches of a CASE, a column of a CTE or an ``unnest``) or from the argument bound to a ``$n``; its guard
must be a ``<column> = ANY($n)`` term of its WHERE whose argument is taken from ``protocol.states``.
"""

import ast
import functools
import gc
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from phonefleet.protocol import states
from tests.sql_clauses import (
    OPAQUE,
    Tok,
    Write,
    any_param,
    case_branches,
    column_source,
    conjuncts,
    inserts,
    literal_comparisons,
    opaque_marker,
    strip,
    tokenize,
    unnest_arg,
    updates,
)

ROOT = Path(__file__).resolve().parent.parent
RUNS_SQL = {"fetch", "fetchrow", "fetchval", "execute", "executemany"}
STATES_MODULE = "phonefleet.protocol.states"


def parse(text: str) -> ast.Module:
    """``ast.parse`` with the collector off: on CPython 3.11.7 a finalizer the collector runs in the middle of
    building the tree (here an earlier test's leaked asyncio task, logging that it was destroyed) upsets the
    parser's recursion count, and ``ast.parse`` raises SystemError ("AST constructor recursion depth
    mismatch"), as it did once in CI."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class Entity:
    """A table with a status column: the column, its state machine, the states a new row may start in, and
    the column's default in the migrations."""

    column: str
    table: Mapping[Any, frozenset[Any]]
    initial: Collection[Any]
    default: str | None


def _split_columns(body: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in body:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


@functools.cache
def migration_columns() -> dict[str, dict[str, str]]:
    """table -> column -> its definition text, as the migrations leave it (a later CHECK constraint wins)."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted((ROOT / "migrations").glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text())
        for m in re.finditer(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
            for column in _split_columns(m.group(2)):
                words = column.split(None, 1)
                if len(words) == 2:
                    out.setdefault(m.group(1), {})[words[0]] = " ".join(words[1].split())
        for m in re.finditer(r"ALTER TABLE (\w+) ADD COLUMN (\w+) ([^;]*);", sql):
            out.setdefault(m.group(1), {})[m.group(2)] = " ".join(m.group(3).split())
        for m in re.finditer(r"ALTER TABLE (\w+) ADD CONSTRAINT \w+\s+CHECK \((\w+) IN (\([^)]*\))\)", sql):
            cols = out.setdefault(m.group(1), {})
            kept = re.sub(r"CHECK \(.*", "", cols.get(m.group(2), ""), flags=re.S)
            cols[m.group(2)] = f"{kept}CHECK ({m.group(2)} IN {' '.join(m.group(3).split())})"
    return out


def column_default(table: str, column: str) -> str | None:
    m = re.search(r"DEFAULT '(\w+)'", migration_columns()[table][column])
    return m.group(1) if m else None


def column_check(table: str, column: str) -> set[str]:
    """The values the database's CHECK allows in a status column."""
    m = re.search(r"CHECK \(\w+ IN \(([^)]*)\)\)", migration_columns()[table][column])
    assert m is not None, (table, column)
    return set(re.findall(r"'(\w+)'", m.group(1)))


def entities() -> dict[str, Entity]:
    """The store's tables with a status column and the state machine of each."""
    def entity(name: str, column: str, table: Mapping[Any, frozenset[Any]], initial: Collection[Any]) -> Entity:
        return Entity(column, table, initial, column_default(name, column))

    return {
        "jobs": entity("jobs", "status", states.JOB_TRANSITIONS, states.JOB_INITIAL),
        "assignments": entity("assignments", "status", states.ASSIGNMENT_TRANSITIONS, states.ASSIGNMENT_INITIAL),
        "devices": entity("devices", "state", states.DEVICE_TRANSITIONS, states.DEVICE_INITIAL),
        "agents": entity("agents", "status", states.AGENT_TRANSITIONS, states.AGENT_INITIAL),
        "artifacts": entity("artifacts", "status", states.ARTIFACT_TRANSITIONS, states.ARTIFACT_INITIAL),
    }


@dataclass
class Statement:
    """One SQL statement a store function runs, rendered from its source, and the arguments of its ``$n``."""

    where: str  # module.function:line
    sql: str
    args: list[ast.expr]
    function: ast.AST | None


@dataclass
class Source:
    """A store module: its syntax tree and its namespace (to evaluate what its statements are given)."""

    name: str
    tree: ast.Module
    namespace: dict[str, Any]
    statements: list[Statement] = field(default_factory=list)

    @classmethod
    def of_module(cls, module: ModuleType) -> "Source":
        assert module.__file__ is not None
        return cls.of_text(module.__name__, Path(module.__file__).read_text(), vars(module))

    @classmethod
    def of_text(cls, name: str, text: str, namespace: dict[str, Any] | None = None) -> "Source":
        """A module given as text (the tests' own examples); run to get its namespace unless given one."""
        tree = parse(text)
        if namespace is None:
            namespace = {"__name__": name}
            exec(compile(tree, name, "exec"), namespace)
        source = cls(name, tree, namespace)
        source.statements = list(source._find_statements())
        return source

    def evaluate(self, node: ast.expr) -> Any:
        """A module-level value (raises NameError and the like for what depends on a function's locals)."""
        return eval(compile(ast.Expression(node), self.name, "eval"), dict(self.namespace))

    def render(self, node: ast.expr) -> str:
        if isinstance(node, ast.JoinedStr):
            return "".join(self.render(v) for v in node.values)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.FormattedValue):
            node = node.value
        try:
            value = self.evaluate(node)
        except Exception:
            return opaque_marker(ast.unparse(node))
        return str(value)

    def _find_statements(self) -> Iterator[Statement]:
        for function, node in _calls(self.tree):
            if isinstance(node.func, ast.Attribute) and node.func.attr in RUNS_SQL and node.args:
                name = getattr(function, "name", "<module>")
                yield Statement(f"{self.name}.{name}:{node.lineno}", self.render(node.args[0]), node.args[1:], function)

    def fragments(self) -> Iterator[str]:
        """Every string literal in the module (f-string parts too)."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield node.value

    def states_derived(self, node: ast.expr) -> bool:
        """Does ``node`` take its value from ``protocol.states`` (directly, or through the module's own
        constants and functions)?"""
        imported = {a.asname or a.name for n in self.tree.body if isinstance(n, ast.ImportFrom)
                    and n.module == STATES_MODULE for a in n.names}
        defined: dict[str, ast.AST] = {}
        for n in self.tree.body:
            if isinstance(n, ast.FunctionDef):
                defined[n.name] = n
            elif isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None:
                for target in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                    if isinstance(target, ast.Name):
                        defined[target.id] = n.value
        seen: set[str] = set()

        def derived(tree: ast.AST) -> bool:
            for name in {x.id for x in ast.walk(tree) if isinstance(x, ast.Name)}:
                if name in imported:
                    return True
                if name in defined and name not in seen:
                    seen.add(name)
                    if derived(defined[name]):
                        return True
            return False

        return derived(node)


def _calls(tree: ast.AST, function: ast.AST | None = None) -> Iterator[tuple[ast.AST | None, ast.Call]]:
    for child in ast.iter_child_nodes(tree):
        inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
        if isinstance(child, ast.Call):
            yield function, child
        yield from _calls(child, inner)


def _has_str_literal(node: ast.AST) -> bool:
    return any(isinstance(x, ast.Constant) and isinstance(x.value, str) for x in ast.walk(node))


def _as_states(value: Any) -> set[str]:
    if isinstance(value, str):
        return {str(value)}
    return {str(v) for v in value}


def _same(a: list[Tok], b: list[Tok]) -> bool:
    return [t.text for t in strip(a)] == [t.text for t in strip(b)]


class Unresolved(Exception):
    """A value the test cannot bound from the source; the write must say it (a target guard)."""


@dataclass
class Check:
    """The check of one write of one statement."""

    source: Source
    statement: Statement
    write: Write
    entity: Entity
    problems: list[str] = field(default_factory=list)

    def arg(self, n: int) -> ast.expr:
        args = self.statement.args
        starred = next((k for k, a in enumerate(args) if isinstance(a, ast.Starred)), len(args))
        if n - 1 >= starred:
            raise Unresolved(f"${n} comes after a *argument: put the guard's arguments before it")
        return args[n - 1]

    def values(self, expr: list[Tok]) -> set[str]:
        """Every value ``expr`` may have."""
        expr = strip(expr)
        branches = case_branches(expr)
        if branches is not None:
            return set().union(*(self.values(b) for b in branches))
        if len(expr) == 1 and expr[0].kind == "str":
            return {expr[0].value}
        if len(expr) == 1 and expr[0].kind == "param":
            return self.param_values(int(expr[0].text[1:]))
        if len(expr) == 3 and expr[1].text == "." and expr[0].kind == expr[2].kind == "ident":
            found = column_source(tokenize(self.statement.sql), expr[2].text)
            if isinstance(found, list):
                return self.values(found)
            if isinstance(found, tuple):
                return self.values(unnest_arg(tokenize(self.statement.sql), found[1], found[0]))
        raise Unresolved(f"cannot tell what {' '.join(t.text for t in expr)!r} may be")

    def param_values(self, n: int) -> set[str]:
        node = self.arg(n)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "checked_initial":
            node = node.args[0]  # a run-time check bounds the value to the set it is given
        try:
            return _as_states(self.source.evaluate(node))
        except Exception as exc:
            raise Unresolved(f"${n} ({ast.unparse(node)}) is known only at run time") from exc

    def targets(self) -> set[str]:
        assert self.write.value is not None
        for term in conjuncts(self.write.where):  # a target guard: <the value written> = ANY($n)
            found = any_param(term)
            if found and _same(found[0], self.write.value):
                return self.guard_values(found[1], "target guard")
        return self.values(self.write.value)

    def guard_values(self, n: int, what: str) -> set[str]:
        node = self.arg(n)
        if _has_str_literal(node):
            self.problems.append(f"{what} ${n} is hard-coded: {ast.unparse(node)}")
        if not self.source.states_derived(node):
            self.problems.append(f"{what} ${n} does not come from protocol.states: {ast.unparse(node)}")
        try:
            return _as_states(self.source.evaluate(node))
        except Exception as exc:
            raise Unresolved(f"{what} ${n} ({ast.unparse(node)}) is known only at run time") from exc

    def guard(self) -> tuple[int, ast.expr] | None:
        for term in conjuncts(self.write.where):
            found = any_param(term)
            if found and [t.text for t in found[0]][-1:] == [self.entity.column] and (
                    len(found[0]) == 1 or found[0][0].text in self.write.names):
                return found[1], self.arg(found[1])
        return None

    def run(self) -> list[str]:
        try:
            if self.write.opaque_columns:
                self.check_opaque()
            elif self.write.kind == "insert":
                self.check_insert()
            else:
                self.check_update()
        except Unresolved as exc:
            self.problems.append(str(exc))
        return [f"{self.statement.where} ({self.write.kind} {self.write.table}): {p}" for p in self.problems]

    def check_opaque(self) -> None:
        """A column list built at run time: the function must not name the status column anywhere."""
        column = self.entity.column
        function = self.statement.function
        named = function is None or any(isinstance(x, ast.Constant) and isinstance(x.value, str)
                                        and re.search(rf"\b{column}\b", x.value) for x in ast.walk(function))
        if named:
            self.problems.append(f"its columns are built at run time and may include {column}")

    def check_insert(self) -> None:
        if self.write.value is None:
            if self.entity.default is None:
                self.problems.append(f"{self.entity.column} has no default: name it")
                return
            new = {self.entity.default}
        else:
            new = self.values(self.write.value)
        self.check_known(new)
        outside = sorted(new - {str(s) for s in self.entity.initial})
        if outside:
            self.problems.append(f"a new row may start as {outside}, not among its table's initial states")

    def check_update(self) -> None:
        assert self.write.value is not None
        literal = literal_comparisons(self.write.where, self.entity.column, self.write.names)
        if literal:
            self.problems.append(f"its WHERE compares {self.entity.column} with literals: {literal}")
        if any(t.kind == OPAQUE for t in self.write.where):
            self.problems.append("its WHERE is built at run time")
        guard = self.guard()
        if guard is None:
            self.problems.append(f"no top-level `{self.entity.column} = ANY($n)` guard")
            return
        n, node = guard
        if self.runtime_checked(node):
            return
        sources, targets = self.guard_values(n, "guard"), self.targets()
        self.check_known(sources | targets)
        if not sources:
            self.problems.append("its guard is empty: the statement can never write")
        table = {str(s): {str(t) for t in ts} for s, ts in self.entity.table.items()}
        bad = sorted(f"{s} -> {t}" for s in sources for t in targets if s in table and s != t and t not in table[s])
        if bad:
            self.problems.append(f"its guard allows moves its table does not: {bad}")

    def runtime_checked(self, node: ast.expr) -> bool:
        """``checked_sources(TABLE, target, ...)``: the table checks each move when the statement runs."""
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "checked_sources"):
            return False
        if self.source.evaluate(node.args[0]) is not self.entity.table:
            self.problems.append("its run-time check uses another entity's table")
        value = strip(self.write.value or [])
        target = self.arg(int(value[0].text[1:])) if len(value) == 1 and value[0].kind == "param" else None
        if target is None or ast.dump(target) != ast.dump(node.args[1]):
            self.problems.append("its run-time check is not given the target the statement writes")
        return True

    def check_known(self, values: set[str]) -> None:
        unknown = sorted(values - {str(s) for s in self.entity.table})
        if unknown:
            self.problems.append(f"unknown states {unknown}")


def writes(source: Source, known: Mapping[str, Entity]) -> Iterator[tuple[Statement, Write]]:
    columns = {t: e.column for t, e in known.items()}
    for statement in source.statements:
        toks = tokenize(statement.sql)
        for write in updates(toks, columns) + inserts(toks, columns):
            yield statement, write


def problems(source: Source, known: Mapping[str, Entity] | None = None) -> list[str]:
    """Everything wrong with the module's status writes (empty: each is guarded by its table)."""
    known = known or entities()
    found = [p for statement, write in writes(source, known)
             for p in Check(source, statement, write, known[write.table]).run()]
    return found + unseen_writes(source, known)


def unseen_writes(source: Source, known: Mapping[str, Entity]) -> list[str]:
    """SQL text that writes a status table but that no discovered statement runs (built some other way)."""
    rendered = [re.sub("\x00[^\x00]*\x00", " ", s.sql) for s in source.statements]  # not an opaque part's source
    return [f"{source.name}: SQL no discovered statement runs writes a status table: {text.strip()[:80]!r}"
            for text in source.fragments() if writes_status(text, known) and not any(text in sql for sql in rendered)]


def writes_status(text: str, known: Mapping[str, Entity]) -> bool:
    """Does this text look like SQL that writes a status table (an UPDATE or INSERT of one, a SET of its column)?"""
    tables = "|".join(known)
    columns = "|".join({e.column for e in known.values()})
    return re.search(rf"\b(UPDATE|INSERT\s+INTO)\s+({tables})\b|\bSET\b[^;]*\b({columns})\s*=", text,
                     re.I | re.S) is not None
