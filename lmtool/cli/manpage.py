"""Man pages (roff) generated from the CLI's own definitions: one page per command.

click-man cannot be used: current Typer bundles its own Click (`typer._click`, private:
pyproject pins the Typer range this was tested with), and
click-man's `isinstance(param, click.Option)` checks against the external Click drop every
option; it also stamps today's date into each page and prints Click's `\\b` marker. So we
walk the command tree ourselves. Pages are deterministic: the version, never a date.

    pages = render_pages(app)                 # {"lmtool-tokenize-train.1": "...roff..."}
    write_pages(app, Path("man"))              # rewrites man/, deleting stale pages
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import typer
import typer.main
from typer import _click as click

from lmtool import __version__
from lmtool.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_MISSING_EXTRA,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_RUNTIME,
    EXIT_USAGE,
)

SECTION = "1"

# The same on every page: what a script can rely on (lmtool.errors has the codes).
EXIT_STATUS = [
    (str(EXIT_OK), "Success."),
    (str(EXIT_RUNTIME), "The work failed: a diverging loss, a failed download, a full disk."),
    (str(EXIT_USAGE), "Bad input or usage: an unknown option, a missing or malformed file, "
                      "an output that exists (without --force), a path that cannot be written."),
    (str(EXIT_PARTIAL), "Done, but some inputs got no result, each reported on stderr "
                        "(classify, generate and fill-mask write one result per input)."),
    (str(EXIT_MISSING_EXTRA), "An optional part of lmtool is not installed; the line says what "
                              "to install (pictures: pip install 'lmtool[plot]')."),
    (str(EXIT_INTERRUPTED), "Interrupted (Ctrl-C); whatever could be saved was saved."),
    (str(EXIT_BROKEN_PIPE), "stdout was closed early (as in `| head`)."),
]
ENVIRONMENT = [
    ("LMTOOL_DEBUG", "Set (to anything) to print the Python traceback under an error."),
    ("LMTOOL_CACHE", "Where `lmtool corpus download` keeps corpora: $LMTOOL_CACHE/corpora "
                     "(default $XDG_CACHE_HOME/lmtool, else ~/.cache/lmtool)."),
    ("LMTOOL_CORPUS_MANIFEST", "A corpus manifest (JSON) to read instead of the built-in one."),
]


def _escape(text: str) -> str:
    """Roff-escape one line of text: backslashes, hyphens, non-ASCII characters (as
    \\[uXXXX], which every troff reads whatever the locale), and a leading . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return "\\&" + text if text.startswith((".", "'")) else text


def _paragraphs(help_text: str) -> list[str]:
    """Click's help text as roff: plain paragraphs are refilled, a paragraph that starts
    with Click's \\b marker (our Examples blocks) is kept verbatim."""
    out = []
    for para in inspect.cleandoc(help_text).split("\n\n"):
        if para.startswith("\b"):
            lines = para.split("\n")[1:]
            out.append(".PP\n.nf\n" + "\n".join(_escape(line) for line in lines) + "\n.fi")
        elif para.strip():
            out.append(".PP\n" + _escape(" ".join(para.split())))
    return out


def _summary(command: click.Command) -> str:
    """The first sentence of the help, for the NAME line and command lists."""
    text = command.short_help or inspect.cleandoc(command.help or "").split("\n\n")[0]
    text = " ".join(text.replace("\b", "").split())
    head, dot, _ = text.partition(". ")
    return (head + ("." if dot else "")).rstrip(".")


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    return click.Context(command, info_name=name, parent=parent, **command.context_settings)


def _subcommands(ctx: click.Context) -> list[tuple[str, click.Command]]:
    group = ctx.command
    if not hasattr(group, "list_commands"):
        return []
    found = [(n, group.get_command(ctx, n)) for n in group.list_commands(ctx)]
    return [(n, c) for n, c in found if c is not None and not c.hidden]


def _page_name(ctx: click.Context) -> str:
    return ctx.command_path.replace(" ", "-")


def _items(records: list[tuple[str, str]]) -> list[str]:
    """.TP items: the flags in bold, the metavar in italics, then the help with its default.
    Click's records look like "-o, --output <path>", "-q, --quiet", "sources... <list[str]>"."""
    out = []
    for flags, help_text in records:
        m = re.match(r"(.*?)(?: ([<{\[].*))?$", flags)
        names, metavar = m.group(1), m.group(2)
        head = f"\\fB{_escape(names)}\\fR" + (f" \\fI{_escape(metavar)}\\fR" if metavar else "")
        out.append(f".TP\n{head}\n{_escape(' '.join(help_text.split()))}")
    return out


def render_page(ctx: click.Context, prog: str) -> str:
    command = ctx.command
    page = _page_name(ctx)
    lines = [
        f'.TH "{page.upper()}" "{SECTION}" "" "{prog} {__version__}" "{prog} manual"',
        ".SH NAME",
        f"{_escape(page)} \\- {_escape(_summary(command))}",
        ".SH SYNOPSIS",
        f".B {_escape(ctx.command_path)}",
        _escape(" ".join(command.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        *_paragraphs(command.help or ""),
    ]
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p.get_help_record(ctx) for p in params if p.param_type_name == "argument"]
    options = [p.get_help_record(ctx) for p in params if p.param_type_name == "option"]
    if arguments:
        lines += [".SH ARGUMENTS", *_items([r for r in arguments if r])]
    if options:
        lines += [".SH OPTIONS", *_items([r for r in options if r])]
    children = _subcommands(ctx)
    if children:
        lines.append(".SH COMMANDS")
        for name, child in children:
            child_page = f"{page}-{name}"
            lines.append(
                f".TP\n\\fB{_escape(name)}\\fR\n{_escape(_summary(child))}. "
                f"See \\fB{_escape(child_page)}\\fR({SECTION})."
            )
    lines += [".SH EXIT STATUS", *_items(EXIT_STATUS), ".SH ENVIRONMENT", *_items(ENVIRONMENT)]
    see_also = []
    if ctx.parent is not None:
        see_also.append(_page_name(ctx.parent))
    see_also += [f"{page}-{name}" for name, _ in children]
    if see_also:
        lines += [
            ".SH SEE ALSO",
            ", ".join(f"\\fB{_escape(p)}\\fR({SECTION})" for p in see_also),
        ]
    return "\n".join(lines) + "\n"


def render_pages(app: typer.Typer, prog: str = "lmtool") -> dict[str, str]:
    """Every page of the command tree, keyed by file name ("lmtool-corpus-list.1")."""
    pages: dict[str, str] = {}

    def walk(ctx: click.Context) -> None:
        pages[f"{_page_name(ctx)}.{SECTION}"] = render_page(ctx, prog)
        for name, child in _subcommands(ctx):
            walk(_context(child, name, ctx))

    root = typer.main.get_command(app)
    walk(_context(root, prog, None))
    return pages


def write_pages(app: typer.Typer, out_dir: Path, prog: str = "lmtool") -> list[Path]:
    """Write every page into out_dir and delete pages of commands that no longer exist."""
    from lmtool.fsio import write_text_atomic

    pages = render_pages(app, prog)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f"{prog}*.{SECTION}"):
        if stale.name not in pages:
            stale.unlink()
    written = []
    for name, text in sorted(pages.items()):
        path = out_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
        written.append(path)
    return written
