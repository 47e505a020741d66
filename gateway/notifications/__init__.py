"""Messages to a team's own channels about its queue: reviews past their SLA, and the daily digest."""
