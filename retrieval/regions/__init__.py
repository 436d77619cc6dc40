"""Region-level retrieval: describe each gallery image by many regions, not one vector.

Small objects vanish in a whole-image descriptor; a region that frames the object keeps it.

    proposals.py  the proposer registry and the `Regions` every proposer returns
    grid.py       multi-scale overlapping windows
    segments.py   class-agnostic segments (Felzenszwalb superpixels, grouped hierarchically)
    learned.py    learned proposers that need local weights (Segment Anything)
    pooling.py    region vectors: ROI pooling of an image pyramid's passes, or one pass per crop

The representations that use them (`roi`, `crop`) are in `retrieval.representations`; their
rows are searched like any others (`retrieval.search`), and localisation is scored with the
protocols (`retrieval.protocols.localisation`).
"""
