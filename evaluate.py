"""The whole job: extract, search and score, reusing every cached artifact.

    python evaluate.py                                  # demo set, offline default model
    python evaluate.py -m model=effnet_lite0,dinov2_vits14 query=full,box,mask
"""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from retrieval import cli, pipeline


@cli.command_line_checked
@hydra.main(version_base=None, config_path="conf", config_name="config")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    pipeline.evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
