"""Catalog and storage backends: on this machine's disk (`local_store`, `store_dir`, `extract`) and on OCI
services (`oci_catalog`, `oci_store`, over `oci_clients`). Backends know no HTTP of their own and
load no models: app.py picks them from the config, and the core sees only the Catalog protocol
(server/catalog.py) and the storage roles (server/storage.py)."""
