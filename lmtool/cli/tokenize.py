"""`lmtool tokenize`: placeholder, filled in by its owner."""

import typer

app = typer.Typer(help="tokenize", no_args_is_help=True)
