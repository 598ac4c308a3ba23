"""The routing policy: its model, YAML loading, templates, hot reload, cases, Kamailio push."""
