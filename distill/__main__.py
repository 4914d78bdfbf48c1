"""`python -m distill [stage=<name>] [experiment=<name>] [key=value ...]`: the Hydra driver.

Hydra runs here only; training ranks get a resolved config file, never a Hydra app of their own.
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
    sys.exit(main())
