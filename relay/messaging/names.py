"""Task names, shared by the web process (which publishes by name) and the workers."""

DELIVER_TASK = "consent_relay.deliver_contact"
DELIVER_BATCH_TASK = "consent_relay.deliver_batch"  # (destination, [contact ids]): ids only
# [[destination, contact id, request id, traceparent], ...] from a web process's background
# publisher (entries of three, without the traceparent, are still read)
DISPATCH_TASK = "consent_relay.dispatch"
SWEEP_TASK = "consent_relay.sweep_outbox"
PROBE_TASK = "consent_relay.probe_destination"
PRUNE_TASK = "consent_relay.prune"  # [retention]: no arguments (relay/ledger/retention.py)
# (destination, [contact ids]): read delivered decisions back (workers/verification/)
VERIFY_TASK = "consent_relay.verify_contacts"
# (notification send id): one signed operational webhook (workers/notifications/send.py)
NOTIFY_TASK = "consent_relay.send_notification"
# (destination erasure row id): pass an erasure on to one destination (workers/erasure/forward.py)
ERASE_AT_DESTINATION_TASK = "consent_relay.erase_at_destination"
# Message header with the intake request's id, for the worker's log lines (not an argument:
# a task's arguments stay the ids of what to deliver).
REQUEST_ID_TASK_HEADER = "consent_relay_request_id"
