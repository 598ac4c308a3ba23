"""Asking the VVP Verifier: the HTTP client, its guard (breaker, adaptive limit), verdict facts."""
