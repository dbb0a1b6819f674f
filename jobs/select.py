"""Ray job: pick ids to label — `ray job submit --working-dir . -- python jobs/select.py --strategy ...`.

Takes exactly the flags of `dal-dist select` and prints its JSON summary as the last stdout line.
Only `--distributed` k-center uses Ray; it then joins the job's cluster (`ray.init()`, or `--address`).
"""

import sys
from pathlib import Path

# Python put jobs/ first on sys.path, where `select.py` would shadow the stdlib module: put the repo
# root there instead, so a checkout (the job's working_dir, the code Ray ships to workers) imports as is.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from dal_dist.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv[1:1] = ["select"]
    main()
