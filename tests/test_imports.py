"""Architecture rules, checked on the source (as BayBE's test_imports does)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"experiment_design", "simulators", "models", "acquisition", "loop"}


def _imports(package: str) -> dict[str, set[str]]:
    """File → top-level modules it imports."""
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


def _ours(package: str) -> dict[str, set[str]]:
    return {f: (mods & OURS) - {package} for f, mods in _imports(package).items()}


def test_experiment_design_imports_nothing_of_ours():
    assert {f: m for f, m in _ours("experiment_design").items() if m} == {}


def test_only_loop_imports_ray():
    for package in OURS - {"loop"}:
        offenders = [f for f, mods in _imports(package).items() if "ray" in mods]
        assert offenders == [], f"{package} must not import ray: {offenders}"


def test_plugin_packages_do_not_import_each_other():
    allowed = {
        "simulators": {"experiment_design"},
        "models": {"experiment_design"},
        "acquisition": {"experiment_design", "models"},
    }
    for package, ok in allowed.items():
        bad = {f: m - ok for f, m in _ours(package).items() if m - ok}
        assert bad == {}, f"{package} imports beyond {ok}: {bad}"


def test_acquisition_uses_only_the_model_protocol():
    for f, mods in _imports("acquisition").items():
        if "models" in mods:
            src = (ROOT / f).read_text()
            for line in src.splitlines():
                if line.strip().startswith(("from models", "import models")):
                    assert line.strip().startswith("from models.base import"), f"{f}: {line.strip()}"
