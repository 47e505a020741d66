"""hitl-gateway: a human-in-the-loop moderation gateway for LLM answers."""
