"""Aggregating local features: what VLAD, SegVLAD and R-MAC representations are made of.

Pure functions over dense feature maps (C x h x w torch tensors, on whichever device they
are), and the fitting of the state some of them learn first:

    dense.py          a model's dense maps of a pixel batch, local descriptors, seeded samples, cell geometry
    state.py          fitted state on disk: atomic .npz files keyed by a digest of sample and settings
    vlad.py           AnyLoc's VLAD: a k-means vocabulary (faiss, seeded), hard assignment, residuals
    whitening.py      PCA-whitening learnt on a sample (R-MAC's regions, VLAD, SegVLAD)
    supersegments.py  segments on the patch grid, their neighbourhood graph, supersegments of order o
    segvlad.py        Revisit Anything's SegVLAD: VLAD per supersegment; images scored by their segments
    rmac.py           Tolias et al.'s R-MAC: the region grid, regional max-pooling, whitening, sum
    aml.py            approximate max-pooling localisation: the window most like a query, refined

The representations that wrap them (fit on a sample, encode gallery and queries) live in
`retrieval.representations`.
"""
