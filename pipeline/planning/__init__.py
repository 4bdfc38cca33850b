"""Planning: the catalogue expanded into jobs with build_ids, decided by mode and change,
selected."""
