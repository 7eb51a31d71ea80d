"""Catalog and storage backends: on this machine's disk (`local_catalog`, `local_store`, with
`store_dir` and `extract`) and on OCI services (`oci_catalog`, `oci_store`, over `oci_clients`).
Backends know no HTTP of their own and load no models: app.py picks them from the config, and the
core sees only the Catalog protocol (server/catalog.py) and the storage roles (server/storage.py)."""
