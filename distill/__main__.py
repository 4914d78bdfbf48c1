"""`python -m distill [stage=<name>] [experiment=<name>] [key=value ...]`: the Hydra driver.

Hydra runs here only; training ranks get a resolved config file, never a Hydra app of their own.
`python -m distill verify run.name=X [run.root=R]` re-hashes a finished run and walks its lineage
(distill.core.lineage); it reads manifests only, so it needs neither Hydra nor the stages' config.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distill.pipeline import register_configs

register_configs()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from distill.pipeline import run_pipeline

    overrides = list(HydraConfig.get().overrides.task)
    run_pipeline(cfg, overrides)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if sys.argv[1:2] == ["verify"]:
        from distill.core.lineage import main as verify

        sys.exit(verify(sys.argv[2:]))
    sys.exit(main())
