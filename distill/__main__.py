"""`python -m distill [-v] [stage=<name>] [experiment=<name>] [key=value ...]`: the Hydra driver.

Hydra runs here only; training ranks get a resolved config file, never a Hydra app of their own.
`python -m distill verify run.name=X [run.root=R]` re-hashes a finished run and walks its lineage
(distill.core.lineage); it reads manifests only, so it needs neither Hydra nor the stages' config.
`-v` / `--verbose` is `log.level=debug`: every library's log line on the console, as before the quiet
console (distill.core.logs); Hydra itself takes no such flag, so it is rewritten before Hydra parses.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distill.pipeline import register_configs

register_configs()
VERBOSE_FLAGS = ("-v", "--verbose")


def verbose_to_override(argv: list[str]) -> list[str]:
    """`-v` anywhere on the command line becomes the override `log.level=debug`."""
    rest = [a for a in argv if a not in VERBOSE_FLAGS]
    return rest + ["log.level=debug"] if len(rest) != len(argv) else rest


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from distill.core.logs import setup
    from distill.pipeline import run_pipeline

    setup(cfg.log)
    overrides = list(HydraConfig.get().overrides.task)
    run_pipeline(cfg, overrides)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if sys.argv[1:2] == ["verify"]:
        from distill.core.lineage import main as verify

        sys.exit(verify(sys.argv[2:]))
    sys.argv[1:] = verbose_to_override(sys.argv[1:])
    sys.exit(main())
