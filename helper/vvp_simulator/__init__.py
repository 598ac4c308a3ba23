"""A SIMULATOR of the VVP Verifier service, for demos and tests. Not a verifier."""
