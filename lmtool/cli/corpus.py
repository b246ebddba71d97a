"""`lmtool corpus`: placeholder, filled in by its owner."""

import typer

app = typer.Typer(help="corpus", no_args_is_help=True)
