"""The conversation model, the floor everything stands on: requests as clients send them, the answers and tool
calls they get back, the wire formats and the upstream adapters. It imports nothing of ours above it."""
