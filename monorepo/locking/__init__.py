"""Making and checking pylock.toml: resolve, merge, close over build dependencies."""
