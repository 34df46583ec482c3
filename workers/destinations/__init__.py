"""Destination clients: Mapp Engage and the peers, with their shared toolkit and errors."""
