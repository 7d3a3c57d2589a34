"""paysched: scheduled payments, each exactly once, on time, never lost."""

__version__ = "0.1.0"
