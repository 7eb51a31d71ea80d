"""The Pulumi program under mocks for the tests: infra.render runs it (no CLI, no cloud); this module
adds the stack-file helpers and caches one run per stack for the tests that only read it."""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

from infra.render import (  # noqa: F401 - the tests' vocabulary
    ENVIRONMENTS, ROOT, SECRET_SIG, Resource, Run, in_fresh_runtime, inputs, node_pool_options, project,
    random_password, run_program, stack_config, stack_names, unwrap,
)


def config(stack: str) -> dict[str, str]:
    return stack_config(stack)[0]


def setting(stack: str, key: str, default=None):
    """A `model-inference-platform:` setting of a stack file, decoded as the program sees it."""
    value = config(stack).get(f"{PROJECT}:{key}", default)
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def is_hybrid(stack: str) -> bool:
    return setting(stack, "mode", "oci") == "hybrid"


PROJECT = project()["name"]
STACKS = stack_names()
OCI_STACKS = [s for s in STACKS if not is_hybrid(s)]
HYBRID_STACKS = [s for s in STACKS if is_hybrid(s)]
PROD_STACKS = [s for s in OCI_STACKS if setting(s, "env") == "prod"]


@functools.cache
def stack_run(stack: str) -> Run:
    """run_program(stack) once per test session, for tests that only read the run."""
    return run_program(stack)


def with_config(stack: str, config: dict[str, str], function: Callable[[], Any]) -> Any:
    """Call function() where pulumi.Config sees `config` (to test settings without resources)."""

    async def body(run: Run, loop):
        return function()

    return in_fresh_runtime(stack, config, [], body)[1]
