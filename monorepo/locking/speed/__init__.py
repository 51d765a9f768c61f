"""Speed-only machinery of locking: reuse of an earlier resolution, warm start."""
