"""What the project says: pyproject.toml, its targets and indexes, and the pylock.toml format."""
