"""Subject identity: identifiers, person keys and name history."""
