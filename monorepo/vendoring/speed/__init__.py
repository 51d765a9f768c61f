"""Speed-only machinery of vendoring: downloads ahead, stat stamps, tree facts, placement."""
