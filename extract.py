"""Embed queries and gallery: `python extract.py dataset=robotools model=dinov2_vitb14 query=mask`
(with `regions=grid|segments|...`, the gallery's region vectors)."""
import hydra
from omegaconf import DictConfig

from retrieval import cli, pipeline


@cli.command_line_checked
@hydra.main(version_base=None, config_path="conf", config_name="config")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    queries, gallery = pipeline.features(cfg)
    print(f"queries: {queries}\ngallery: {gallery}")


if __name__ == "__main__":
    main()
