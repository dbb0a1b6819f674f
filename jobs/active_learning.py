"""Ray job: an active-learning run — `ray job submit --working-dir . -- python jobs/active_learning.py --config C ...`.

Takes exactly the flags of `dal-dist run` (its argv goes to that command), then prints the run's
status (`dal_dist.driver.run_status`) as one JSON line, the last on stdout. The driver joins the
job's cluster (`ray.init()` sees RAY_ADDRESS under `ray job submit`; `ray.address` in the config
wins); run plainly it starts a local Ray.
"""

import argparse
import json
import sys
from pathlib import Path

from dal_dist.cli.main import import_everything, main


def _run_dir(argv: list[str]) -> str | None:
    """The directory `dal-dist run` used: --resume, else --run-dir, else the config's `run_dir`."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config")
    p.add_argument("--run-dir")
    p.add_argument("--resume")
    a, _ = p.parse_known_args(argv)
    if a.resume or a.run_dir:
        return a.resume or a.run_dir  # a path or file:// URI: Path() would mangle the URI
    if a.config:
        from dal_dist.driver.config import load_config

        cfg = load_config(a.config)
        return cfg.run_dir or None
    return None


if __name__ == "__main__":
    import_everything()  # before Ray connects: the job's working_dir copy may not outlive that
    argv = sys.argv[1:]
    sys.argv[1:] = ["run", *argv]
    main()  # exits non-zero on error, like the CLI
    run_dir = _run_dir(argv)
    if run_dir is not None and "--help" not in argv:
        from dal_dist.driver import run_status

        print(json.dumps(run_status(run_dir), default=str), flush=True)
