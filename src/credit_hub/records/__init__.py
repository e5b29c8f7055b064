"""Records and their versions: reading, history, withdrawal."""
