"""Regenerate man/ from the CLI's own definitions (one roff page per command).

    .venv/bin/python scripts/make_man.py

Stale pages (of commands that no longer exist) are deleted. tests/test_manpages.py fails
when man/ differs from what this script would write.
"""

from __future__ import annotations

from pathlib import Path

from lmtool.cli.main import app
from lmtool.cli.manpage import write_pages

MAN_DIR = Path(__file__).resolve().parent.parent / "man"


def main() -> None:
    pages = write_pages(app, MAN_DIR)
    print(f"wrote {len(pages)} man pages to {MAN_DIR}")


if __name__ == "__main__":
    main()
