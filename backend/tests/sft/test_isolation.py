"""app.sft knows nothing of the service: no module of it imports app.core, app.api or app.jobs, at the
top or inside a function; what it needs (model cache directory, device, roots, limits) comes in as
arguments."""

from __future__ import annotations

import ast
from pathlib import Path

import app.sft

SFT_DIR = Path(app.sft.__file__).parent
SERVICE_PACKAGES = ("app.core", "app.api", "app.jobs")
#: Modules allowed to import the service (none: the training core takes what it needs as arguments).
PENDING: set[str] = set()


def service_imports(path: Path) -> list[str]:
    """``module (line n)`` for each import of a service package in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            else:  # relative to app.sft: one dot is app.sft, two is app
                base = ["app", "sft"][: 3 - node.level] if node.level <= 2 else []
                names = [".".join([*base, node.module] if node.module else base)]
                if not node.module:
                    names = [f"{names[0]}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [f"{name} (line {node.lineno})" for name in names
                  if any(name == p or name.startswith(p + ".") for p in SERVICE_PACKAGES)]
    return found


def test_no_sft_module_imports_the_service():
    modules = sorted(SFT_DIR.glob("*.py"))
    assert len(modules) > 10
    offending = {path.name: found for path in modules if path.name not in PENDING
                 for found in [service_imports(path)] if found}
    assert offending == {}


def test_the_scan_sees_relative_absolute_and_nested_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from ..core.settings import settings\nimport app.api.deps\n"
                      "def f():\n    from ..jobs import manager\n    from .. import core\n"
                      "from .models import x\nimport json\n", encoding="utf-8")
    assert service_imports(sample) == ["app.core.settings (line 1)", "app.api.deps (line 2)",
                                       "app.jobs (line 4)", "app.core (line 5)"]
