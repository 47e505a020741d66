"""Confidence signals computed from an answer."""
