"""One blueprint per area of the service: ``pages`` (HTML) and ``api`` (JSON)."""
