"""Ray job: pick ids to label — `ray job submit --working-dir . -- python jobs/select_ids.py --strategy ...`.

Takes exactly the flags of `dal-dist select` and prints its JSON summary as the last stdout line.
Only `--distributed` k-center uses Ray; it then joins the job's cluster (`ray.init()`, or `--address`).
"""

import sys

from dal_dist.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["select"]
    main()
