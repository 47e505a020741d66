"""What a team lead reads off the stored history: how much is held, how agents decide, how long clients wait."""
