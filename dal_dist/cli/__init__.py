"""The `dal-dist` command line: one module per command group, each a thin call into the library."""

from dal_dist.cli.main import main

__all__ = ["main"]
