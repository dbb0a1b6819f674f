"""Ray job: pick ids to label — `ray job submit --working-dir . -- python jobs/select_ids.py --strategy ...`.

Takes exactly the flags of `dal-dist select` and prints its JSON summary as the last stdout line.
Only `--distributed` k-center uses Ray; it then joins the job's cluster (`ray.init()`, or `--address`).
"""

import sys

from dal_dist.cli.main import import_everything, main

if __name__ == "__main__":
    import_everything()  # before Ray connects: the job's working_dir copy may not outlive that
    sys.argv[1:1] = ["select"]
    main()
