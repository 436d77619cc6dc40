"""Search: the top k gallery images of every query, over rows of the one form
(`retrieval.features`), exactly or through a faiss index, and the ranking they make.

    images.py       rows to images: an image scores as its best row; what every search returns
    exact.py        exact top k, block by block in memory a budget bounds, on every device
    index.py        faiss indexes: the one builder, tie-ordered search, GPUs, saving
    approximate/    approximate indexes: shortlists, saved indexes, knobs, tuning, recall
    composed.py     composed queries (an image and words): two similarities combined, exactly
    votes.py        queries of several rows (segments) voting for images (SegVLAD), exactly
    rank.py         the search a run asks for: exact, or through an approximate index
    finish.py       hits to a ranking: depth, skipped queries, boxes and masks
    localise.py     boxes of each query's top results found after search (AML, for rmac)

Kept free of imports here: the report reads `approximate.recall.describe` without faiss.
"""
