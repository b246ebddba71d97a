"""Errors become one stderr line and an exit code here, once, for every command.

`LmtoolGroup` is the root command's class: every command runs inside its `invoke`
(CliRunner included), so a new command cannot forget the conversion:

    lmtool: error: WHAT IS WRONG (WHAT TO DO)

- our errors (lmtool.errors): their message and hint, exit 2 (bad input) or 1;
- OS errors (disk full, permission, a file where a directory should be): the path and
  the system's reason, exit 2 when the path is at fault, else 1;
- usage errors (unknown option or command, missing option, bad value): one line with a
  suggestion, exit 2;
- Ctrl-C: exit 130; stdout closed early (`| head`): exit 141, silently;
- anything else is a bug: one line naming it, exit 1.

LMTOOL_DEBUG=1 prints the traceback as well.

The usage errors are the Click that Typer bundles (typer._click, private): pyproject
pins the Typer range this was tested with.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import traceback
from typing import Any

import typer
from typer._click.exceptions import (
    BadParameter,
    MissingParameter,
    NoArgsIsHelpError,
    NoSuchOption,
    UsageError,
)
from typer.core import TyperGroup

from lmtool.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_RUNTIME,
    EXIT_USAGE,
    LmtoolError,
    from_os_error,
)


def fail(message: str, hint: str | None = None, code: int = EXIT_RUNTIME) -> typer.Exit:
    """Print the one error line; return the Exit to raise."""
    if os.environ.get("LMTOOL_DEBUG"):
        traceback.print_exc(file=sys.stderr)
    sys.stderr.write(f"lmtool: error: {message}" + (f" ({hint})" if hint else "") + "\n")
    sys.stderr.flush()
    return typer.Exit(code)


def _closed_stdout() -> typer.Exit:
    """The reader went away (`lmtool ... | head`): stop quietly, as `cat` would. stdout
    now points at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return typer.Exit(EXIT_BROKEN_PIPE)


def _value_given(argv: list[str], names: list[str]) -> str | None:
    """The last value the command line gave an option (`--kind x` or `--kind=x`)."""
    found = None
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif word.startswith(name + "="):
                found = word[len(name) + 1:]
    return found


def _bad_value(e: BadParameter, argv: list[str]) -> tuple[str, str | None]:
    """"--kind: 'bpee' is not one of bpe, wordpiece, unigram, char", "did you mean bpe?"."""
    param = e.param
    names = list(getattr(param, "opts", []) or [])
    flag = names[0] if names else (param.human_readable_name if param else "value")
    choices = []
    if param is not None and e.ctx is not None:
        choices = [item.value for item in param.shell_complete(e.ctx, "")
                   if getattr(item, "type", "plain") == "plain"]
    value = _value_given(argv, names) if names else None
    if choices and value is not None:
        close = difflib.get_close_matches(value, choices, n=1)
        return (f"{flag}: {value!r} is not one of {', '.join(choices)}",
                f"did you mean {close[0]}?" if close else None)
    reason = e.message.removeprefix("Value error, ")
    kinds = {"integer": "an integer", "number": "a number", "boolean": "true or false"}
    for word, wanted in kinds.items():  # pydantic's "Input should be a valid integer, ..."
        if reason.startswith(f"Input should be a valid {word}"):
            reason = f"expects {wanted}" + (f", not {value!r}" if value is not None else "")
    return f"{flag}: {reason[:1].lower()}{reason[1:]}".rstrip("."), None


def _command_path(root: Any, argv: list[str]) -> str:
    """"lmtool tokenize train": the commands named on the command line, for errors that
    come without their context."""
    path, command = ["lmtool"], root
    for word in argv:
        child = getattr(command, "commands", {}).get(word)
        if child is None and not word.startswith("-"):
            break
        if child is not None:
            path.append(word)
            command = child
    return " ".join(path)


def usage_line(e: UsageError, argv: list[str], root: Any = None) -> tuple[str, str]:
    """A usage error as (message, hint): the hint suggests, or points to --help."""
    where = e.ctx.command_path if e.ctx is not None else _command_path(root, argv)
    help_hint = f"see `{where} --help`"
    if isinstance(e, NoSuchOption):
        close = e.possibilities or difflib.get_close_matches(
            e.option_name, [o for p in e.ctx.command.params for o in getattr(p, "opts", [])]
            if e.ctx is not None else [], n=1)
        suggestion = f"did you mean {' or '.join(sorted(close))}?" if close else help_hint
        return f"{where} has no option {e.option_name}", suggestion
    if isinstance(e, BadParameter) and not isinstance(e, MissingParameter):
        message, suggestion = _bad_value(e, argv)
        return message, suggestion or help_hint
    message = e.format_message() if isinstance(e, MissingParameter) else e.message
    message = " ".join(message.split())
    found = re.match(r"(.*?)\.? Did you mean (.*)\?$", message)  # Typer's command suggestion
    if found:
        message, suggestion = found.group(1), f"did you mean {found.group(2)}?"
    else:
        suggestion = help_hint
    message = message.replace("No such command", "unknown command")
    return message[:1].lower() + message[1:].rstrip("."), suggestion


def _convert(error: BaseException, argv: list[str], root: Any) -> BaseException:
    """What to raise instead of `error`: an Exit after printing its line, or `error`
    itself when it is not ours to handle (help, --version, an explicit typer.Exit)."""
    if isinstance(error, (typer.Exit, typer.Abort, NoArgsIsHelpError)):
        return error
    if isinstance(error, LmtoolError):
        return fail(error.message, error.hint, error.exit_code)
    if isinstance(error, UsageError):
        message, hint = usage_line(error, argv, root)
        return fail(message, hint, EXIT_USAGE)
    if isinstance(error, typer.TyperException):
        return fail(error.format_message(), None, error.exit_code)
    if isinstance(error, KeyboardInterrupt):
        return fail("interrupted", None, EXIT_INTERRUPTED)
    if isinstance(error, BrokenPipeError):
        return _closed_stdout()
    if isinstance(error, OSError):
        converted = from_os_error(error)
        return fail(converted.message, converted.hint, converted.exit_code)
    if isinstance(error, Exception):
        return fail(f"unexpected {type(error).__name__}: {error}",
                    "a bug in lmtool; LMTOOL_DEBUG=1 shows where", EXIT_RUNTIME)
    return error  # SystemExit, GeneratorExit


class LmtoolGroup(TyperGroup):
    """The root group: parses, runs the command, converts whatever it raises."""

    def main(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)  # for bad-value messages
        return super().main(args, *rest, **kwargs)

    def make_context(self, *args: Any, **kwargs: Any) -> typer.Context:
        try:  # the root's own options (`lmtool --bogus`); subcommands parse in invoke
            return super().make_context(*args, **kwargs)
        except BaseException as e:
            converted = _convert(e, getattr(self, "_argv", []), self)
            if converted is e:
                raise
            raise converted from None

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BaseException as e:
            converted = _convert(e, getattr(self, "_argv", []), self)
            if converted is e:
                raise
            raise converted from None
