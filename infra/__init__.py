"""The Pulumi program: `main: infra/` in Pulumi.yaml runs __main__.py."""
