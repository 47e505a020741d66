"""Retention and erasure: conversations removed after their retention period (`hitl purge`) or on a customer's
request (`hitl erase --user`), from every table that holds them, with a trail of what was removed."""
