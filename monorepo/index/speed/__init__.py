"""Speed-only machinery of the index client: worker processes, page and metadata caches."""
