"""Speed-only machinery of the extractor: a fast tar header reader, extraction workers."""
