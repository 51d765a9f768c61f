"""``monorepo build``: duni/ built into wheels, offline, in dependency order."""
