"""Push ingestion: batches of records, their reports and signed receipts."""
