"""Versioned SQL migrations, applied in order by `slotkeeper migrate` (sync/db.py)."""
