"""From a locked source to a tree: the content store, git, fetching, patching, tree hashes."""
