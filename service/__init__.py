"""lrsearch's HTTP service: API, auth, CLI. Never imported by `search`."""
