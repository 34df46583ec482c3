"""Emulators of third-party APIs, used by the tests and the demo instead of the real vendors."""
