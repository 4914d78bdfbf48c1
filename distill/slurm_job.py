"""Alias of `distill.cluster.job`, kept for one release: batch scripts submitted before the package layout
still run `python -m distill.slurm_job run|node-launch ...`."""

import sys

from distill.cluster.job import main

if __name__ == "__main__":
    sys.exit(main())
