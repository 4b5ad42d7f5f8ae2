"""The delivery worker: hands each released send to SMTP exactly once (docs/delivery.md)."""
