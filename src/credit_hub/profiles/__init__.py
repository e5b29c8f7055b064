"""The read side: unified subject profiles, screening, search (no tables of its own)."""
