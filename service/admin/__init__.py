"""The admin API (bearer token): dead letters, replay, destination pauses."""
