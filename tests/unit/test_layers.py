"""Nothing imports upward (docs/design.md, "Layers"): each part of the package imports only parts
of a lower layer, or itself. Imports for the type checker only (under ``TYPE_CHECKING``) are
not imports at run time and are left out."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dataset_spiders"

#: Each part of the package (a subpackage or a top-level module) and its layer, lowest first.
LAYERS: dict[str, int] = {
    **dict.fromkeys(["outcomes", "secrets", "params", "sources", "signals", "logs", "settings", "__version__",
                     "settings_check", "children", "parent_progress"], 0),
    "dataset": 1,
    **dict.fromkeys(["scaleout", "downloader", "items", "report"], 2),
    **dict.fromkeys(["pipelines", "spiders", "extensions"], 3),
    **dict.fromkeys(["commands", "cli", "api", "settings_doc", "__main__", "__init__"], 4),
}
TOP = 4


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, imported module) of every run-time import of our own modules in one file."""
    module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                if node.module:
                    found.append((node.lineno, ".".join([*base, node.module])))
                else:
                    found += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
            elif node.module and node.module.split(".")[0] == "dataset_spiders":
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "dataset_spiders"]
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    parts.discard("data")  # package data (a TSV), no code
    assert parts - set(LAYERS) == set(), "give the new part a layer here and in docs/design.md"


def _upward(root: Path) -> list[str]:
    upward = []
    for path in sorted(root.rglob("*.py")):
        source = _part(".".join(path.relative_to(root.parent).with_suffix("").parts))
        for line, target in _imports(path, root):
            into = _part(target)
            if into == source or (LAYERS[source] == TOP and LAYERS[into] == TOP):
                continue
            if LAYERS[into] >= LAYERS[source]:
                upward.append(f"{path.relative_to(root.parent)}:{line} imports {target}")
    return upward


def test_nothing_imports_upward() -> None:
    assert _upward(PACKAGE) == []


def test_the_check_names_an_upward_import_and_not_one_for_the_type_checker(tmp_path: Path) -> None:
    core = tmp_path / "dataset_spiders" / "dataset" / "core.py"
    core.parent.mkdir(parents=True)
    core.write_text("from typing import TYPE_CHECKING\n"
                    "from .files import open_regular\n"
                    "from ..outcomes import Outcome\n"
                    "if TYPE_CHECKING:\n    from ..spiders.base import DatasetSpider\n"
                    "def late():\n    from ..pipelines import images\n")
    assert _upward(tmp_path / "dataset_spiders") == ["dataset_spiders/dataset/core.py:7 imports "
                                                     "dataset_spiders.pipelines"]
