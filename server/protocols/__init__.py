"""The protocols the server speaks, each a thin layer over the core (server/core/): it reads its
requests, calls the core, and writes its answers and error wordings. `common` holds what they share:
bodies, JSON, error bodies and request accounting."""
