"""Versioned SQL migrations, applied in order by `slotkeeper migrate` (api/db.py)."""
