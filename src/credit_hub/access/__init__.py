"""Clients (departments, agencies, operators), their API keys, scopes and declared purposes."""
