from retrieval.protocols.localisation import add_localisation  # moved
