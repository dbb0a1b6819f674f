"""The `dal-dist` command line: one Typer sub-app per command group, each a thin call into the library."""

from __future__ import annotations

import sys

import typer

from dal_dist.errors import DalDistError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Distributed deep active learning on Ray.")


def _register() -> None:
    # Each module adds its commands to `app` (or a sub-app); heavy imports stay inside commands.
    from dal_dist.cli import bench, model, pool, report, run, score, select, stream  # noqa: F401


def main() -> None:
    """Entry point that turns DalDistError into a one-line message and exit code 2."""
    _register()
    try:
        app(standalone_mode=False)
    except DalDistError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
