"""The plan of a run: the checked config read once into typed, frozen parts that the stages
take (`RunPlan.from_config(cfg)`, cfg a Hydra DictConfig or a plain dict).

    run.py        RunPlan: the parts below, built from the config; the whole-image baseline
    dataset.py    the dataset a run reads (query file and distractors applied)
    model.py      the model: family, options, resolved preprocessing, weights' identity
    stores.py     one feature store per split: items, representation, folder, shard size
    search.py     the search: index, depth, aggregation, memory bounds, approximate options
    settings.py   paths, extraction and evaluation settings
    identity.py   the run's names in its results (metrics.json, the leaderboard row)
"""
from retrieval.plan.run import RunPlan
from retrieval.plan.stores import SPLITS, MismatchError, StoreSpec

__all__ = ["SPLITS", "MismatchError", "RunPlan", "StoreSpec"]
