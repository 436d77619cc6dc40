"""Pipeline stages: a run's plan (and input paths) in, artifact path out; each builds only what
is missing and never imports another stage (what they share is the plan, `retrieval.plan`).

    extract.main(plan, split)                     -> feature store  (split = "queries", "texts" or "gallery")
    search.main(plan)                             -> ranking.npz
    rerank.main(plan, ranking)                    -> ranking.npz of the last re-rank step
    evaluate.main(plan, ranking, out, baseline)   -> metrics.json

`retrieval.pipeline` builds the plan once (`RunPlan.from_config`, from Hydra's config or a
plain dict) and chains them, so the stages run the same without Hydra.
"""
