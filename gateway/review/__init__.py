"""The review workflow: agents, claims and decisions."""
