"""Web: the intake of signed consent webhooks (routes) and the publisher of deliveries."""
