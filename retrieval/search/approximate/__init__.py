"""Approximate search that says how approximate it is.

    shortlist.py a query's top rows from an index (re-scored exactly if asked), grouped by image
    saved.py     the index as an artifact of the gallery: built once, memory-mapped on load
    knobs.py     the search-time knob of each index type (nprobe, efSearch) and its ladder
    recall.py    recall@K against exact search, and the held-out query samples it is measured on
    tuning.py    the cheapest knob value reaching a target recall, cached with the index
    measured.py  a run's index made ready: on its devices, knob set or tuned, recall measured

Kept free of imports here: the report reads `recall.describe` without faiss.
"""
