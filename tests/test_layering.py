"""The package's layers, read from the source with ``ast`` (nothing is imported).

- The Ray adapters ``simulators``, ``serve_apps`` and ``tune_configs`` never import each
  other; what they share is in ``ray_support`` (Ray plumbing), ``client`` (no Ray) or
  ``platform`` (the domain core).
- ``ray_support`` and ``client`` import no adapter, so they cannot carry an edge between
  two adapters.
- ``platform`` imports no adapter, no ``ray_support``/``client``/``cli``, and no Ray.

Every import counts: those inside functions and ``if TYPE_CHECKING:`` blocks too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "greenflow"
ADAPTERS = ("simulators", "serve_apps", "tune_configs")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(
    path: Path, *, root: Path = PACKAGE.parent, top_level_only: bool = False
) -> Iterator[str]:
    """Every module ``path`` (under ``root``, the directory above ``greenflow``) imports,
    absolute (relative imports resolved); for ``from X import Y`` both ``X`` and ``X.Y``
    (``Y`` may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _layer_files(layer: str) -> list[Path]:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules under greenflow/{layer}"
    return files


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for path in _layer_files(layer):
        for module in imported_modules(path):
            if any(_within(module, f) for f in forbidden):
                out.append(f"{path.relative_to(PACKAGE.parent)} imports {module}")
    return sorted(set(out))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_do_not_import_each_other(adapter: str) -> None:
    others = tuple(f"greenflow.{a}" for a in ADAPTERS if a != adapter)
    assert _violations(adapter, others) == []


@pytest.mark.parametrize("layer", ["ray_support", "client"])
def test_shared_layers_import_no_adapter(layer: str) -> None:
    assert _violations(layer, tuple(f"greenflow.{a}" for a in (*ADAPTERS, "cli"))) == []


def test_platform_imports_no_adapter_and_no_ray() -> None:
    above = ("ray_support", "client", "cli", *ADAPTERS)
    assert _violations("platform", ("ray", *(f"greenflow.{p}" for p in above))) == []


def test_client_imports_no_ray() -> None:
    assert _violations("client", ("ray",)) == []


def test_simulators_hold_ray_jobs_only() -> None:
    """A module of ``simulators`` that uses no Ray belongs in ``platform`` (issue #16)."""
    no_ray = [
        str(path.relative_to(PACKAGE.parent))
        for path in _layer_files("simulators")
        if path.name != "__init__.py"
        and not any(
            _within(m, "ray") or _within(m, "greenflow.ray_support") for m in imported_modules(path)
        )  # fmt: skip
    ]
    assert no_ray == []


def test_metric_declarations_import_ray_only_when_a_metric_is_made() -> None:
    """Tools and tests read the declarations without Ray; ``counter`` imports it lazily."""
    path = PACKAGE / "ray_support" / "metrics.py"
    assert not [m for m in imported_modules(path, top_level_only=True) if _within(m, "ray")]


def test_the_check_sees_every_import_form(tmp_path: Path) -> None:
    pkg = tmp_path / "greenflow" / "serve_apps"
    pkg.mkdir(parents=True)
    mod = pkg / "m.py"
    mod.write_text(
        "import greenflow.simulators.a\n"
        "from greenflow import tune_configs\n"
        "from ..simulators import b\n"
        "def f():\n"
        "    from ray import serve\n"
    )
    found = set(imported_modules(mod, root=tmp_path))
    assert {"greenflow.simulators.a", "greenflow.tune_configs", "greenflow.simulators.b",
            "ray"} <= found  # fmt: skip
