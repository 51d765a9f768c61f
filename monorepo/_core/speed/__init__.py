"""Speed-only machinery of the ground floor: worker processes and write-behind."""
