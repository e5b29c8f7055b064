"""Published data standards: loading, checking, validating and normalizing records."""
