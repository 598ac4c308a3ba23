"""VVP edge routing helper: decides what Kamailio answers to each INVITE."""
