"""Instance retrieval: find every gallery image that holds the query's very object, and score it."""

__version__ = "0.1.0"
