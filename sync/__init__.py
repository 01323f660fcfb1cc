"""slotkeeper sync: drain events to PostgreSQL, sweep expiry, reconcile, restore."""
