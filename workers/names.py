"""Task names, shared by the web process (which publishes by name) and the workers."""

DELIVER_TASK = "consent_relay.deliver_contact"
SWEEP_TASK = "consent_relay.sweep_outbox"
PROBE_TASK = "consent_relay.probe_destination"
