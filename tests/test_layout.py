"""The package's structure: imports run downward through its layers, none hides inside a function,
and docs/layout.md names every module that exists."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from prealign.serving.limits import DEFAULT_PORT

PACKAGE = Path(__file__).parents[1] / "src" / "prealign"
LAYOUT = Path(__file__).parents[1] / "docs" / "layout.md"

# Low to high: a module imports from its own layer or those below, never from above.
LAYERS = (
    {
        "image_span",
        "images",
        "padding",
        "chat_template",
        "chat_rendering",
        "variants",
        "upstream_warnings",
        "config",
    },
    {"modeling"},
    {"processing"},
    {"tiny", "official", "data", "assembly", "serving", "smoke"},
    {"export", "training", "evaluation", "analysis"},
    {"nano"},
    {"commands"},
    {"cli"},
)
LAYER_OF = {area: rank for rank, areas in enumerate(LAYERS) for area in areas}
# Imported where they are used, on purpose: modules of optional dependencies only that command needs.
DEFERRED = {
    ("commands/evaluate.py", "prealign.evaluation.vlmeval_adapter"),  # VLMEvalKit
    ("commands/serving.py", "prealign.serving.openai_server"),  # FastAPI, uvicorn
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _internal_imports(path: Path) -> list[tuple[ast.ImportFrom, str, bool]]:
    """(node, imported module, inside a function) for every relative import of `path`."""
    package = ["prealign", *path.relative_to(PACKAGE).parent.parts]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom) and child.level:
                base = package[: len(package) - (child.level - 1)]
                module = ".".join(base + ([child.module] if child.module else []))
                if child.module is None:  # `from . import x`: a submodule, or the package's own name
                    for alias in child.names:
                        is_file = (PACKAGE.joinpath(*base[1:], alias.name)).with_suffix(".py").exists()
                        is_package = PACKAGE.joinpath(*base[1:], alias.name).is_dir()
                        found.append(
                            (child, f"{module}.{alias.name}" if is_file or is_package else module, inside)
                        )
                else:
                    found.append((child, module, inside))
            visit(child, inside)

    visit(ast.parse(path.read_text()), False)
    return found


def _area(module: str) -> str | None:
    """prealign.x.y -> x (None: the package itself, whose __init__ is its public face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_area_has_a_layer():
    areas = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()} - {"__init__", "assets"}
    assert areas - set(LAYER_OF) == set(), "add new areas of the package to LAYERS"


def test_imports_run_downward():
    upward = []
    for path in _modules():
        source = _area("prealign." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if source in (None, "__init__"):
            continue
        for node, module, _ in _internal_imports(path):
            target = _area(module)
            if target is not None and LAYER_OF[target] > LAYER_OF[source]:
                upward.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {module}")
    assert upward == []


def test_no_import_hides_inside_a_function():
    hidden = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} imports {module}"
        for path in _modules()
        for node, module, inside in _internal_imports(path)
        if inside and (path.relative_to(PACKAGE).as_posix(), module) not in DEFERRED
    ]
    assert hidden == []


def test_the_layout_page_names_every_module():
    page = LAYOUT.read_text()
    unnamed = [
        str(p.relative_to(PACKAGE)) for p in _modules() if p.name != "__init__.py" and p.name not in page
    ]
    assert unnamed == []


def test_commands_take_numeric_defaults_from_the_library():
    """An option's number is the library's default, read from its owner: never a second copy
    that drifts (eval's batch size and new tokens, nano's tolerance, the bench's settings)."""
    literal = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in [PACKAGE / "cli.py", *sorted((PACKAGE / "commands").glob("*.py"))]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.keyword)
        and node.arg == "default"
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, int | float)
        and not isinstance(node.value.value, bool)
    ]
    assert literal == []


def test_the_command_line_needs_no_optional_dependency_to_start():
    """`prealign` with neither the server's FastAPI/uvicorn nor VLMEvalKit installed: every
    command's options parse; only `serve` and `vlmeval` themselves need their extras."""
    blocked = "import sys\nfor name in ('fastapi', 'uvicorn', 'vlmeval', 'lmms_eval'):\n"
    blocked += "    sys.modules[name] = None\n"  # an import of any of them fails as if not installed
    run = "from prealign.cli import build_parser\nprint(build_parser().parse_args(['serve', 'm']).port)\n"
    result = subprocess.run([sys.executable, "-c", blocked + run], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(DEFAULT_PORT)
