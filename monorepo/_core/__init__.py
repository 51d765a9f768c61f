"""The ground floor: atomic writes, once-maps, progress reporting, file trees, the cache directory."""
