"""Alias of `distill.train.worker`, kept for one release: jobs queued before the package layout (and their
plan files) still start with `python -m distill.train_worker --config plan.json`."""

from distill.train.worker import main

if __name__ == "__main__":
    raise SystemExit(main())
