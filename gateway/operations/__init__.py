"""What an operator sees of a running gateway: its logs (and, as they come, metrics and traces)."""
