"""VVP edge routing helper: decides what Kamailio answers to each INVITE."""

__version__ = "0.1.0"
