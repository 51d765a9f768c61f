"""Resolution: the resolvelib provider, and the finder that feeds it from the index."""
