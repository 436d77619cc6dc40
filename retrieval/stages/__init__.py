"""Pipeline stages: config in, artifact folder out. Each stage builds what it is missing.

    extract.main(cfg, split) -> embeddings folder     (split = "queries" or "gallery")
    search.main(cfg)         -> ranking.npz
    evaluate.main(cfg, out)  -> metrics.json

`cfg` is a plain mapping (an OmegaConf DictConfig from the Hydra entry points, or a dict),
so the stages run the same without Hydra.
"""
