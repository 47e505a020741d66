"""The HTTP routes of the gateway's API: the dialects clients speak, the reviews they poll, the dataset export."""
