"""Ray job: score a pool — `ray job submit --working-dir . -- python jobs/score_pool.py --pool P ...`.

Takes exactly the flags of `dal-dist score` (its argv goes to that command) and prints the same JSON
summary as the last stdout line. `ray.init()` with no address joins the job's cluster under
`ray job submit` (RAY_ADDRESS is set there); run plainly it starts a local Ray, or joins `--address`.
"""

import sys
from pathlib import Path

# Python put jobs/ first on sys.path, where `select.py` would shadow the stdlib module: put the repo
# root there instead, so a checkout (the job's working_dir, the code Ray ships to workers) imports as is.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from dal_dist.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[1:1] = ["score"]
    main()
