"""Rank the gallery for every query, then re-rank (extracting first if needed):
`python search.py index=ivfpq`, `python search.py 'rerank=[dba,alpha_qe]'`."""
import hydra
from omegaconf import DictConfig

from retrieval import cli, pipeline


@cli.command_line_checked
@hydra.main(version_base=None, config_path="conf", config_name="config")
@cli.user_errors
def main(cfg: DictConfig) -> None:
    print(f"ranking: {pipeline.ranking(cfg)}")


if __name__ == "__main__":
    main()
