"""The change feed: what changed about which record, in commit order, for agencies."""
