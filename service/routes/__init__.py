"""HTTP routers: thin handlers over `search.store`."""
