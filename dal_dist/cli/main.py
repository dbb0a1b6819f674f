"""`dal-dist`'s entry point: every failure a user can cause ends as one line on stderr and an exit status.

Exit statuses: 0 done, 2 bad input or usage (`error: <where>: <what was expected>`), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM); library code cleans up its staging on the way out, so an interrupted
command publishes nothing.
"""

from __future__ import annotations

import sys

import typer

import dal_dist.cli.bench  # noqa: F401  (each command module registers its commands on `app`)
import dal_dist.cli.embed  # noqa: F401
import dal_dist.cli.model  # noqa: F401
import dal_dist.cli.pool  # noqa: F401
import dal_dist.cli.report  # noqa: F401
import dal_dist.cli.run  # noqa: F401
import dal_dist.cli.score  # noqa: F401
import dal_dist.cli.select  # noqa: F401
import dal_dist.cli.stream  # noqa: F401
from dal_dist.cli.app import app
from dal_dist.errors import DalDistError
from dal_dist.interrupts import Terminated, received, sigterm_raises


def _is_usage_error(e: BaseException) -> bool:
    # Typer >= 0.20 vendors its own Click (typer._click): its UsageError is not click.ClickException, so
    # recognise both by their shape rather than by class.
    return hasattr(e, "exit_code") and hasattr(e, "format_message") and hasattr(e, "show")


def _usage_line(e: BaseException) -> str:
    ctx = getattr(e, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None and getattr(ctx, "command_path", None) else ""
    hint = f" (see `{ctx.command_path} --help`)" if where else ""
    return f"error: {where}{e.format_message()}{hint}"  # type: ignore[attr-defined]


def import_everything() -> None:
    """Import every module of the package now, for Ray job entrypoints (jobs/*.py): Ray 2.60 can remove the
    job's working_dir copy once the driver connects, and a module first imported after that is not found."""
    import importlib
    import pkgutil

    import dal_dist

    for m in pkgutil.walk_packages(dal_dist.__path__, "dal_dist."):
        if not m.name.startswith(("dal_dist.benchmarks", "dal_dist.__main__")):
            importlib.import_module(m.name)


INTERRUPTED = 130  # 128 + SIGINT: what Typer >= 0.20 returns for Ctrl-C when not in standalone mode


def main() -> None:
    """Run the command line; turn errors, interrupts and usage mistakes into one line and an exit status."""
    try:
        with sigterm_raises():  # SIGTERM unwinds like Ctrl-C: staging is removed, nothing half-published
            rv = app(standalone_mode=False)
    except DalDistError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # Typer < 0.20 (plain Click) turns an interrupt into Abort
        _interrupted()
    except Exception as e:
        if _is_usage_error(e):
            typer.echo(_usage_line(e).replace("\n", " "), err=True)
            sys.exit(2)
        raise
    if rv == INTERRUPTED:  # Typer >= 0.20 catches the KeyboardInterrupt itself and returns 130
        _interrupted()
    if isinstance(rv, int) and not isinstance(rv, bool) and rv:
        sys.exit(rv)


def _interrupted() -> None:
    """Exit 143 after SIGTERM, 130 after Ctrl-C, with one line (library code has removed its staging)."""
    if received:
        typer.echo("terminated (SIGTERM): the interrupted step published nothing", err=True)
        sys.exit(Terminated.exit_code)
    typer.echo("interrupted: the interrupted step published nothing", err=True)
    sys.exit(INTERRUPTED)
