"""credit_hub: a public-credit data-exchange hub."""

__version__ = "0.1.0"
