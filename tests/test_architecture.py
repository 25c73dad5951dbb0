"""The package's import arrows (docs/MAP.md), read from the source, imports inside functions included: a circle
held together by a late import would load today and break on the next reordering."""

import ast
from pathlib import Path

import sparsebert

ROOT = Path(sparsebert.__file__).parent


def room(module: str) -> str:
    """A module's room of the map: a subpackage (sparse, pruning, config, jobs, research) or a top-level module."""
    return ".".join(module.split(".")[:2])


def import_arrows() -> dict[str, set[str]]:
    modules = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in ROOT.rglob("*.py")}
    arrows = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1] if node.level else [])
                source = ".".join(filter(None, [base, node.module]))
                targets |= {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        arrows[name] = {t for t in targets if t in modules and t != name}
    return arrows


def circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    found, done, path = [], set(), []

    def visit(node):
        path.append(node)
        for target in sorted(arrows.get(node, ())):
            if target in path:
                found.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(node)

    for node in sorted(arrows):
        if node not in done:
            visit(node)
    return found


def test_no_circle_between_the_rooms_of_the_package():
    rooms = {}
    for module, targets in import_arrows().items():
        if module != "sparsebert":  # the package's __init__ names the API; nothing below imports it
            rooms.setdefault(room(module), set()).update(room(t) for t in targets if t != "sparsebert")
    rooms = {r: targets - {r} for r, targets in rooms.items()}
    assert circles(rooms) == []
    assert "sparsebert.sparse" not in rooms["sparsebert.models"]  # a Hugging Face folder loads without the engine
    assert "sparsebert.models" not in rooms["sparsebert.sparse"]  # the engine reads no Hugging Face folder itself


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_product_never_imports_the_research_tools():
    """The research tools (grids, records, statistics, plots) import the product; no product module imports them."""
    arrows = import_arrows()
    assert any(t.startswith("sparsebert.jobs") for t in arrows["sparsebert.research.experiment"])  # the check bites
    product = {m: targets for m, targets in arrows.items() if not m.startswith("sparsebert.research")}
    assert {m: sorted(t for t in targets if t.startswith("sparsebert.research"))
            for m, targets in product.items() if any(t.startswith("sparsebert.research") for t in targets)} == {}


def test_a_job_imports_no_other_job_but_the_main_job_its_parts():
    """What two jobs share is a component's; only the main job (`run`) composes other jobs (finetune, prune)."""
    arrows = import_arrows()
    jobs = {m: {t for t in targets if t.startswith("sparsebert.jobs.")}
            for m, targets in arrows.items() if m.startswith("sparsebert.jobs.")}
    assert jobs["sparsebert.jobs.run"] == {"sparsebert.jobs.finetune", "sparsebert.jobs.prune"}  # the check bites
    assert {m: sorted(t) for m, t in jobs.items() if t and m != "sparsebert.jobs.run"} == {}
