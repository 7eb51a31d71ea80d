"""The protocol-free core: the models of this worker in step with the shared state, and scoring.

`registry.Registry` is the façade the protocols call; behind it, each part has one job: `loading`
opens a model (environment checks, errors, metrics), `budget` keeps a worker within its model
memory, `routing` resolves names, versions and aliases (pure functions), `shadow` mirrors requests,
`listing` pages through uploads and the catalog. Nothing here knows HTTP or any protocol's URLs:
errors carry what the caller can do (`errors.Remedy`), and each protocol words it.
"""
