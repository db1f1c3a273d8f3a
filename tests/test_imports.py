"""The package's import graph: imports point one way (no cycles), and the library and the converter
never import the reference implementations (diffusers, transformers, paddle, the original package)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("audioldm_core", "convert")
REFERENCES = ("diffusers", "transformers", "paddle", "paddlenlp", "ppdiffusers", "audioldm")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (top level or inside functions)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(name, path) if m in mods and m != name and m not in PACKAGES}
            for name, path in mods.items()}


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(n: str) -> None:
        state[n] = "open"
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = "done"

    for n in sorted(g):
        if n not in state:
            visit(n)
    return cycles


def test_no_import_cycles():
    g = graph()
    assert len(g) > 20, f"only {len(g)} modules found: the walk is broken"
    cycles = find_cycles(g)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_planted_cycle():
    g = graph()
    g["audioldm_core.layers"] = g["audioldm_core.layers"] | {"audioldm_core.pipeline"}
    assert any("audioldm_core.layers" in c for c in find_cycles(g))


def test_library_never_imports_the_references():
    bad = sorted(f"{name}: {m}" for name, path in modules().items() for m in imports(name, path)
                 if m.split(".")[0] in REFERENCES)
    assert not bad, "the library/converter import reference implementations: " + ", ".join(bad)


def test_generating_and_converting_load_no_reference_module():
    """At run time too: a tiny generation and the converter's import leave none of them in sys.modules."""
    code = ("import sys; import audioldm_core, convert.cli; from audioldm_core import AudioLDM; "
            "AudioLDM.from_pretrained('tiny')('a dog', audio_length_in_s=0.32, num_inference_steps=2, progress=False); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {REFERENCES!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"reference modules imported at run time: {out.stdout.strip()}"
