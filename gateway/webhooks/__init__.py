"""Webhooks: signed notices to each API key's endpoint when its reviews are decided, escalated or run out."""
