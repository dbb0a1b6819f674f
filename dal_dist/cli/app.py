"""The Typer application every `dal-dist` command registers on."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Distributed deep active learning on Ray.")
