"""The package's layering, read from the source (AST; nothing is imported).

1. Only dreamstudio/ui/ imports Gradio: the backend runs from the CLI and scripts without it.
2. The UI reaches the rest of the package only through its public API:
     dreamstudio.studio   the Studio facade, plus the value types and helpers it re-exports
                          for the UI (the names in its __all__: PrepareReport, LoraEntry,
                          JobStatus, GridAxis, PRESETS, SAMPLER_NAMES, ...)
     dreamstudio.config   the typed configs (TrainConfig, GenerateConfig) and their choices
     dreamstudio.errors   the errors whose messages are shown to the user
   Anything else the UI needs is added to Studio (a query) or to studio.__all__ (a type),
   never imported from training, generation or data modules directly.

Every import counts, also those inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dreamstudio"
UI_API = ("dreamstudio.studio", "dreamstudio.config", "dreamstudio.errors")
GUI_MODULES = ("gradio", "gradio_client")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import in the file at `path`
    (a file of the package at `root`); `from . import x` counts as module '<package>.x'."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            if node.module is None:  # from . import a, b: each is a module of its own
                found += [(f"{target}.{name}", [], node.lineno) for name in names]
            else:
                found.append((target, names, node.lineno))
    return sorted(found, key=lambda item: item[2])


def _public_names(root: Path, module: str) -> set[str] | None:
    """The __all__ of `module` of the package at `root` (None if it has none)."""
    path = root.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return None


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import that breaks the layering, as 'file:line: what'."""
    package = root.name
    ui = f"{package}.ui"
    api = {name.replace("dreamstudio", package, 1) for name in UI_API}
    public = {module: _public_names(root, module) for module in api}
    found = []
    for path in sorted(root.rglob("*.py")):
        where = path.relative_to(root.parent)
        in_ui = _module_name(path, root).startswith(ui)
        for target, names, line in imports(path, root):
            top = target.split(".")[0]
            if top in GUI_MODULES and not in_ui:
                found.append(f"{where}:{line}: imports {target} outside {ui}")
            if not in_ui or top != package or target == ui or target.startswith(ui + "."):
                continue
            if target not in api:
                found.append(f"{where}:{line}: imports {target}; the UI uses only "
                             f"{', '.join(sorted(api))}")
                continue
            allowed = public[target]
            hidden = [n for n in names if allowed is not None and n not in allowed]
            if hidden:
                found.append(f"{where}:{line}: imports {', '.join(hidden)} from {target}, "
                             "which is not in its __all__")
    return found


def test_the_package_keeps_its_layers():
    assert violations() == []


def test_the_ui_uses_gradio_and_the_backend_does_not():
    """The checks above look at real imports: the UI's gradio ones are found."""
    assert any(target == "gradio" for target, _, _ in imports(PACKAGE / "ui" / "common.py"))
    assert not any(target.startswith("gradio")
                   for path in PACKAGE.rglob("*.py") if "ui" not in path.parts
                   for target, _, _ in imports(path))


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "dreamstudio"
    for name, text in {"__init__.py": "", "studio.py": "__all__ = ['Studio']\n",
                       "config.py": "", "errors.py": "", "ui/__init__.py": "",
                       "train/__init__.py": "", "train/jobs.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_each_kind_of_violation_is_caught(tmp_path):
    root = _package(tmp_path, {
        "train/trainer.py": "import gradio as gr\n",
        "ui/tab.py": ("from ..studio import Studio\nfrom ..config import TrainConfig\n"
                      "from . import common\nfrom .common import x\n"),
        "ui/bad.py": ("from ..train.jobs import JobStatus\n"
                      "def later():\n    import dreamstudio.train.jobs\n"
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from ..studio import Hidden\n"
                      "from .. import train\n"),
    })
    only = "the UI uses only dreamstudio.config, dreamstudio.errors, dreamstudio.studio"
    assert violations(root) == [
        "dreamstudio/train/trainer.py:1: imports gradio outside dreamstudio.ui",
        f"dreamstudio/ui/bad.py:1: imports dreamstudio.train.jobs; {only}",
        f"dreamstudio/ui/bad.py:3: imports dreamstudio.train.jobs; {only}",
        ("dreamstudio/ui/bad.py:6: imports Hidden from dreamstudio.studio, which is not in "
         "its __all__"),
        f"dreamstudio/ui/bad.py:7: imports dreamstudio.train; {only}",
    ]


def _top_level_imports(path: Path, root: Path) -> set[str]:
    """Modules of the package that the file at `path` imports when it is imported: every
    import outside function bodies, those under `if TYPE_CHECKING:` included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)}
    modules = {_module_name(p, root) for p in root.rglob("*.py")}
    found = set()
    for target, names, line in imports(path, root):
        if line in lines:
            continue
        # `from package import module` imports the module too.
        found |= {t for t in [target, *(f"{target}.{n}" for n in names)] if t in modules}
    return found


def import_cycles(root: Path = PACKAGE) -> list[list[str]]:
    graph = {_module_name(p, root): _top_level_imports(p, root) for p in root.rglob("*.py")}
    cycles, done, stack = [], set(), []

    def visit(module: str) -> None:
        if module in stack:
            cycles.append(stack[stack.index(module):] + [module])
            return
        if module in done:
            return
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        stack.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    return cycles


def test_no_module_imports_itself_round_a_cycle():
    assert import_cycles() == []


def test_a_cycle_under_type_checking_is_caught(tmp_path):
    root = _package(tmp_path, {
        "data/__init__.py": "",
        "data/prepare.py": "from .checks import warn\nclass Report: ...\n",
        "data/checks.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                           "    from .prepare import Report\n"
                           "def later():\n    from ..train import jobs\n"),
    })
    assert import_cycles(root) == [
        ["dreamstudio.data.checks", "dreamstudio.data.prepare", "dreamstudio.data.checks"]]
