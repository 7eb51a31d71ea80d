"""The server's layering rules, held by reading its sources: the core knows no HTTP and no
protocol's routes; the protocols share code through protocols/common (and the tensor codec), never
through each other; Falcon stays in the composition root, the docs and the protocols."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"


def imported_modules(path: Path) -> set[str]:
    """The modules a file imports, relative imports resolved against the server package."""
    package = path.parent.relative_to(SERVER.parent).parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def strings(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_core_knows_no_http_and_no_protocols_routes():
    for path in sorted((SERVER / "core").glob("*.py")):
        imported = imported_modules(path)
        assert not {m for m in imported if m.split(".")[0] in ("falcon", "httptools", "gunicorn")}, path
        assert not {m for m in imported if m.startswith("server.protocols")}, path
        assert not [s for s in strings(path) if "/api/" in s or "/v2/" in s], f"{path} words a protocol's route"


def test_no_protocol_imports_another():
    protocols = {p.stem for p in (SERVER / "protocols").glob("*.py")} - {"__init__", "common", "tensors"}
    assert {"v1", "v2"} <= protocols
    for name in protocols:
        imported = imported_modules(SERVER / "protocols" / f"{name}.py")
        others = {f"server.protocols.{other}" for other in protocols - {name}}
        assert not imported & others, f"protocols/{name}.py imports {imported & others}"


def test_falcon_stays_in_the_composition_root_the_docs_and_the_protocols():
    allowed = {SERVER / "app.py", SERVER / "openapi.py", *(SERVER / "protocols").glob("*.py")}
    for path in SERVER.rglob("*.py"):
        if path not in allowed:
            assert not {m for m in imported_modules(path) if m.split(".")[0] == "falcon"}, path


def test_the_http_engine_knows_the_app_only_through_hosting():
    for name in ("worker", "connection", "targets", "hosting"):
        imported = imported_modules(SERVER / f"{name}.py")
        assert not {m for m in imported if m.startswith(("server.core", "server.app", "server.middleware"))}, name
        assert not {m for m in imported if m.startswith("server.protocols")} - {
            "server.protocols.common", "server.protocols.common.account", "server.protocols.common.error_document"}, name
