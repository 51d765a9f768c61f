"""``monorepo verify``: one module per check."""
