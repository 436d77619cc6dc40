"""Embed queries and gallery: `python extract.py dataset=robotools model=dinov2_vitb14 query=mask`
(with `regions=grid|segments|...`, the gallery's region embeddings)."""
import hydra
from omegaconf import DictConfig

from retrieval.stages import extract, regions


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    print(f"queries: {extract.main(cfg, 'queries')}")
    print(f"gallery: {regions.extract_main(cfg) if regions.enabled(cfg) else extract.main(cfg, 'gallery')}")


if __name__ == "__main__":
    main()
