"""hashsvc: image hash-matching takedown service for intimate-image abuse."""

__version__ = "0.1.0"
