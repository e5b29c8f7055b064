"""The data subject's own access: one-time access codes, short sessions, its own report."""
