"""Training data from the agents' decisions: records with their provenance, the formats teams load, filters,
quality checks, a split and a manifest (see README, "Datasets")."""
