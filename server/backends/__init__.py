"""Catalog and store backends on OCI services (the local ones live in server/catalog.py and
server/store.py). Backends know no HTTP of their own and load no models: app.py picks them from the
config, and the registry sees only the Catalog and Store protocols."""
