"""Embed queries and gallery: `python extract.py dataset=robotools model=dinov2_vitb14 query=mask`."""
import hydra
from omegaconf import DictConfig

from retrieval.stages import extract


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    for split in extract.SPLITS:
        print(f"{split}: {extract.main(cfg, split)}")


if __name__ == "__main__":
    main()
