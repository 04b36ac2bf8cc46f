"""The sh of a virtual phone: command lines parsed with ``shlex`` and run as Python against ``PhoneState``.

Nothing here runs a real process. The subset is what adb clients send: quoting, ``$?`` and ``$NAME``,
``;`` ``&&`` ``||`` ``|``, and ``> >> 2>&1 2>/dev/null``. Every command run is written to the phone's
``ActionLog`` so tests and demos see what a client asked the phone to do.
"""

import posixpath
import re
import shlex
from dataclasses import dataclass, field

from phonefleet.virtual.commandio import (
    BufferSink,
    BytesStdin,
    CommandError,
    CommandIO,
    Handler,
    NullSink,
    OutputSink,
)
from phonefleet.virtual.screen import ScreenRenderer
from phonefleet.virtual.state import PhoneState
from phonefleet.virtual.tools import Tools

SH = "/system/bin/sh"
BIN_DIRS = ("/system/bin", "/system/xbin", "/vendor/bin", "/product/bin", "/bin")
ENV = {"HOME": "/", "SHELL": SH, "USER": "shell", "TMPDIR": "/data/local/tmp", "EXTERNAL_STORAGE": "/sdcard"}

VARIABLE = "\x00"
"""Stands for a ``$`` that expands (outside single quotes) until its command runs: ``echo a; false; echo $?``."""
SHIELD = 0xE000
"""Operator characters inside quotes are moved up to this private-use range while shlex splits the line."""
OPERATOR_CHARS = "();<>|&"
SEPARATORS = {";", "&", "&&", "||"}
REDIRECTS = {">", ">>", ">&"}
EXPANSION = re.compile(VARIABLE + r"(\?|[A-Za-z_][A-Za-z0-9_]*)?")
UNSHIELD = {SHIELD + ord(c): c for c in OPERATOR_CHARS}


class ShellSyntaxError(Exception):
    """A command line the fake sh cannot parse; reported the way mksh does, with exit code 1."""


class ShellExit(Exception):
    """Raised by the ``exit`` builtin to end the current command line."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# --------------------------------------------------------------------------------------------- parser


@dataclass(frozen=True)
class Redirect:
    fd: int
    op: str
    target: str


@dataclass
class SimpleCommand:
    words: list[str] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


@dataclass(frozen=True)
class ListItem:
    """A pipeline and how it joins the one before it (``;``, ``&&`` or ``||``)."""

    connector: str
    pipeline: tuple[SimpleCommand, ...]


class _QuoteAwareInput:
    """Feeds a line to shlex one character at a time and, reading shlex's state, marks what quoting changes:
    a ``$`` outside single quotes becomes ``VARIABLE``, and an operator character inside quotes is shielded,
    so that shlex's own quote handling is the only one and a quoted ``';'`` stays a word."""

    def __init__(self, line: str) -> None:
        self._line = line
        self._pos = 0
        self.lexer = shlex.shlex(self, posix=True, punctuation_chars=OPERATOR_CHARS)
        self.lexer.whitespace_split = True
        self.lexer.commenters = ""

    def read(self, size: int = 1) -> str:
        del size  # shlex reads one character at a time
        char = self._line[self._pos : self._pos + 1]
        self._pos += len(char)
        state = self.lexer.state  # type: ignore[attr-defined]  # shlex's state: a quote, an escape, or not
        if char == "$" and state not in ("'", "\\"):
            return VARIABLE
        if char and char in OPERATOR_CHARS and state in ('"', "'", "\\"):
            return chr(SHIELD + ord(char))
        return char

    def readline(self) -> str:  # shlex reads lines only for comments, which are off
        return ""

    def close(self) -> None:
        return None

    def tokens(self) -> list[str]:
        try:
            return list(self.lexer)
        except ValueError as exc:  # shlex's "No closing quotation" / "No escaped character"
            raise ShellSyntaxError("unterminated quoted string" if "quotation" in str(exc) else str(exc)) from None


def parse(line: str) -> list[ListItem]:
    """One command line as pipelines joined by ``;``, ``&&`` and ``||``."""
    items: list[ListItem] = []
    connector = ";"
    pipeline: list[SimpleCommand] = []
    command = SimpleCommand()
    tokens = _QuoteAwareInput(line).tokens()
    while tokens:
        token = tokens.pop(0)
        if not all(c in OPERATOR_CHARS for c in token):
            command.words.append(token.translate(UNSHIELD))
        elif token in REDIRECTS:
            command.redirects.append(_redirect(command, token, tokens))
        elif token == "|" and (command.words or command.redirects):
            pipeline.append(command)
            command = SimpleCommand()
        elif token in SEPARATORS and (command.words or command.redirects):
            items.append(ListItem(connector, (*pipeline, command)))
            connector = ";" if token in (";", "&") else token
            pipeline, command = [], SimpleCommand()
        else:  # an operator where a command should be, or one this sh does not have (subshells, here-documents)
            raise ShellSyntaxError(f"'{token}' unexpected")
    if command.words or command.redirects:
        items.append(ListItem(connector, (*pipeline, command)))
    elif pipeline or connector != ";":
        raise ShellSyntaxError("newline unexpected")
    return items


def _redirect(command: SimpleCommand, op: str, tokens: list[str]) -> Redirect:
    """A redirection and its target; a number just before it is its descriptor (``2>&1``). shlex does not say
    whether a space came between them, so ``echo 2 > f`` reads as ``echo 2>f`` here: no client sends that."""
    if not tokens or all(c in OPERATOR_CHARS for c in tokens[0]):
        raise ShellSyntaxError("newline unexpected" if not tokens else f"'{tokens[0]}' unexpected")
    fd = int(command.words.pop()) if command.words and command.words[-1].isdigit() else 1
    return Redirect(fd, op, tokens.pop(0).translate(UNSHIELD))


# --------------------------------------------------------------------------------------------- interpreter


class VirtualShell:
    """One sh session on a virtual phone: runs command lines against its state and logs each command it runs."""

    def __init__(self, state: PhoneState, service: str, renderer: ScreenRenderer | None = None) -> None:
        self.state = state
        self.service = service
        self.renderer = renderer or ScreenRenderer()
        self.cwd = "/"
        self.last_status = 0
        self._commands: dict[str, Handler] = {
            **Tools(state, self.renderer).table(),
            "sh": self._sh, "cd": self._cd, "pwd": self._pwd, "exit": self._exit,
        }  # fmt: skip

    async def run(self, line: str, io: CommandIO) -> int:
        """Runs one command line and returns its exit status (as ``sh -c`` would)."""
        try:
            items = parse(line)
        except ShellSyntaxError as exc:
            await io.err(f"{SH}: syntax error: {exc}\n")
            self.last_status = 1
            return 1
        status = 0
        try:
            for item in items:
                if (item.connector == "&&" and status != 0) or (item.connector == "||" and status == 0):
                    continue
                status = self.last_status = await self._run_pipeline(item.pipeline, io)
        except ShellExit as exc:
            status = self.last_status = exc.code
        return status

    def _expand(self, word: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            return "$" if name is None else str(self.last_status) if name == "?" else ENV.get(name, "")

        return EXPANSION.sub(value, word)

    async def _run_pipeline(self, pipeline: tuple[SimpleCommand, ...], io: CommandIO) -> int:
        stdin = io.stdin
        status = 0
        for index, command in enumerate(pipeline):
            last = index == len(pipeline) - 1
            sink: OutputSink = io.stdout if last else BufferSink()
            status = await self._run_simple(command, CommandIO(stdin, sink, io.stderr, self.cwd))
            if isinstance(sink, BufferSink) and not last:
                stdin = BytesStdin(bytes(sink.data))
        return status

    async def _run_simple(self, command: SimpleCommand, io: CommandIO) -> int:
        argv = [self._expand(word) for word in command.words]
        files: list[tuple[str, BufferSink, bool]] = []
        for redirect in command.redirects:
            target = self._expand(redirect.target)
            sink: OutputSink
            if redirect.op == ">&":
                if target not in ("1", "2"):
                    await io.err(f"{SH}: {target}: bad file descriptor\n")
                    return 1
                sink = io.stdout if target == "1" else io.stderr
            elif io.path(target) == "/dev/null":
                sink = NullSink()
            else:
                path = io.path(target)
                try:
                    self.state.files.write(path, b"", append=redirect.op == ">>")
                except (PermissionError, FileNotFoundError, IsADirectoryError):
                    await io.err(f"{SH}: can't create {target}: Permission denied\n")
                    return 1
                sink = BufferSink()
                files.append((path, sink, redirect.op == ">>"))
            io = CommandIO(io.stdin, sink, io.stderr, io.cwd) if redirect.fd == 1 else \
                CommandIO(io.stdin, io.stdout, sink, io.cwd)  # fmt: skip
        status = await self._dispatch(argv, io) if argv else 0
        for path, buffer, append in files:
            self.state.files.write(path, bytes(buffer.data), append=append)
        return status

    def _lookup(self, name: str) -> Handler | None:
        if "/" in name:
            folder, base = posixpath.split(name)
            return self._commands.get(base) if folder in BIN_DIRS else None
        return self._commands.get(name)

    async def _dispatch(self, argv: list[str], io: CommandIO) -> int:
        self.state.actions.append(self.service, argv)
        handler = self._lookup(argv[0])
        if handler is None:
            await io.err(f"{SH}: {argv[0]}: inaccessible or not found\n")
            return 127
        try:
            return await handler(argv[1:], io)
        except CommandError as exc:
            await io.err(exc.message + "\n")
            return exc.code

    # -- builtins

    async def _sh(self, args: list[str], io: CommandIO) -> int:
        if len(args) >= 2 and args[0] == "-c":
            nested = VirtualShell(self.state, self.service, self.renderer)
            nested.cwd = self.cwd
            return await nested.run(args[1], io)
        await io.err(f"{SH}: only `sh -c COMMAND` here\n")
        return 2

    async def _cd(self, args: list[str], io: CommandIO) -> int:
        path = io.path(args[0] if args else "/")
        if not self.state.files.is_dir(path):
            await io.err(f"{SH}: cd: {args[0]}: No such file or directory\n")
            return 2
        self.cwd = path
        return 0

    async def _pwd(self, args: list[str], io: CommandIO) -> int:
        await io.out(self.cwd + "\n")
        return 0

    async def _exit(self, args: list[str], io: CommandIO) -> int:
        if args and not args[0].isdigit():
            raise CommandError(f"exit: invalid number '{args[0]}'")
        raise ShellExit(int(args[0]) & 0xFF if args else self.last_status)
