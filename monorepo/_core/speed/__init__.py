"""Speed-only machinery of the ground floor: worker processes, write-behind, and the switch
(``MONOREPO_NO_SPEEDUPS``) that turns every speed-up of the package off."""
