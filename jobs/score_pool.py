"""Ray job: score a pool — `ray job submit --working-dir . -- python jobs/score_pool.py --pool P ...`.

Takes exactly the flags of `dal-dist score` (its argv goes to that command) and prints the same JSON
summary as the last stdout line. `ray.init()` with no address joins the job's cluster under
`ray job submit` (RAY_ADDRESS is set there); run plainly it starts a local Ray, or joins `--address`.
"""

import sys

from dal_dist.cli.main import import_everything, main

if __name__ == "__main__":
    import_everything()  # before Ray connects: the job's working_dir copy may not outlive that
    sys.argv[1:1] = ["score"]
    main()
