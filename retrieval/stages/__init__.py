"""Pipeline stages: config and input paths in, artifact path out; each builds only what is
missing and never imports another stage (what they share is in `common`).

    extract.main(cfg, split)                      -> feature store  (split = "queries" or "gallery")
    search.main(cfg, queries, gallery)            -> ranking.npz
    rerank.main(cfg, ranking, queries, gallery)   -> ranking.npz of the last re-rank step
    evaluate.main(cfg, ranking, out, baseline)    -> metrics.json

`retrieval.pipeline` chains them. `cfg` is a plain mapping (an OmegaConf DictConfig from the
Hydra entry points, or a dict), so the stages run the same without Hydra.
"""
