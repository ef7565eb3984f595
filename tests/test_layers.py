"""The house's floors: no module imports from a floor above its own.

Ground: utils/ (config, errors, io, precision). Middle: datasets/, models/. Top, side by side:
training/, inference/, evaluation/. Entry points (LEA_GOD.py, LEA_BOLD.py, train.py) and bench/
stand on top of everything. Lazy imports inside functions count too.
"""
import ast
from pathlib import Path

import pytest

from tests.paths import REPO

FLOORS = {"utils": 0, "datasets": 1, "models": 1, "training": 2, "inference": 2, "evaluation": 2}


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages a Python file imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in FLOORS)
    return found


def test_floors_exist_and_say_what_lives_there():
    for package in FLOORS:
        folder = REPO / package
        assert folder.is_dir(), package
        init = folder / "__init__.py"
        assert (folder / "README.md").is_file() or (init.is_file() and ast.get_docstring(ast.parse(init.read_text()))), \
            f"{package}/ opens with neither a README.md nor a package docstring"


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_no_import_from_a_floor_above(package):
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        for other in imported_packages(path):
            if FLOORS[other] > FLOORS[package]:
                wrong.append(f"{path.relative_to(REPO)} imports {other}/ (floor {FLOORS[other]} > {FLOORS[package]})")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_upward_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from inference.run_lea import main\nimport models.lea\nfrom . import x\n")
    assert imported_packages(bad) == {"inference", "models"}
