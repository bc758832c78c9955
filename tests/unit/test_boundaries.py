"""Package boundaries (DESIGN.md §2): services never import each other or the CLI package;
the shared kernel is pure (no runtime, no bus, no service); the runtime holds no service.

Read from the source with ``ast`` (every import, also those inside functions), so a new
cross-import fails here before it ships.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
SHARED = {"runtime", "kernel"}  # packages every service may import
KERNEL_MAY_NOT = ("services.", "stellwerk", "nats", "faststream")


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def package_of(path: Path) -> str:
    return path.relative_to(SERVICES).parts[0]


def python_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*.py") if "__pycache__" not in p.parts]


def test_no_service_imports_another_service_or_the_cli_package() -> None:
    crossing: list[str] = []
    for path in python_files(SERVICES):
        own = package_of(path)
        if own in SHARED or path.parent == SERVICES:
            continue
        for module in imports_of(path):
            parts = module.split(".")
            other_service = parts[0] == "services" and len(parts) > 1 and parts[1] not in SHARED | {own}
            if parts[0] == "stellwerk" or other_service:
                crossing.append(f"{path.relative_to(ROOT)} imports {module}")
    assert crossing == []


def test_the_kernel_is_pure_and_the_runtime_holds_no_service() -> None:
    kernel = python_files(SERVICES / "kernel")
    assert {p.name for p in kernel} >= {"gcra.py", "pricing.py", "call_context.py"}
    for path in kernel:
        for module in imports_of(path):
            ok = module.startswith("services.kernel") or not module.startswith(KERNEL_MAY_NOT)
            assert ok, f"{path.relative_to(ROOT)} imports {module}"
    for path in python_files(SERVICES / "runtime"):
        for module in imports_of(path):
            parts = module.split(".")
            assert parts[0] != "stellwerk", f"{path.relative_to(ROOT)} imports {module}"
            if parts[0] == "services" and len(parts) > 1:
                assert parts[1] in SHARED, f"{path.relative_to(ROOT)} imports {module}"


def test_the_scan_sees_a_crossing_import(tmp_path: Path) -> None:
    """The checker itself: an import inside a function is found too."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f() -> None:\n    from services.dlp.guard import DlpGuard\n    import stellwerk.client\n")
    assert imports_of(probe) == ["services.dlp.guard", "stellwerk.client"]
