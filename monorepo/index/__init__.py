"""The package index client: HTTP, its cache, project pages and core metadata."""
