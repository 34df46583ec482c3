"""Health (/healthz, /readyz) and the Prometheus /metrics endpoint."""
