"""Rank the gallery for every query (extracting first if needed): `python search.py index=ivfpq`."""
import hydra
from omegaconf import DictConfig

from retrieval.stages import search


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    print(f"ranking: {search.main(cfg)}")


if __name__ == "__main__":
    main()
