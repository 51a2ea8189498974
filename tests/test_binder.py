"""binder/ stays in step with pyproject.toml and the Makefile."""

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BINDER = [line.strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
# import name -> distribution name where they differ
DISTRIBUTION = {"jupyter_bokeh": "jupyter_bokeh", "sklearn": "scikit-learn", "yaml": "pyyaml"}


def _names(requirements):
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def test_binder_installs_the_project_with_the_app_extra():
    assert "-e .[app]" in BINDER


def test_binder_torch_pin_is_the_makefiles_and_satisfies_pyproject():
    pin = next(Requirement(line) for line in BINDER if line.startswith("torch"))
    version = next(iter(pin.specifier)).version.split("+")[0]
    assert f"torch=={version}" in (ROOT / "Makefile").read_text()
    torch_requirement = next(Requirement(r) for r in PYPROJECT["project"]["dependencies"] if r.startswith("torch"))
    assert torch_requirement.specifier.contains(version)


def test_every_package_the_widgets_import_is_a_declared_dependency():
    declared = _names(PYPROJECT["project"]["dependencies"]) | _names(PYPROJECT["project"]["optional-dependencies"]["app"])
    imported = set()
    for path in (ROOT / "widgets").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "sfhkit"}
    missing = {m for m in third_party if DISTRIBUTION.get(m, m).lower().replace("_", "-") not in declared}
    assert not missing, f"widgets import {sorted(missing)}, which pyproject.toml does not declare"


def test_the_core_never_imports_the_ui_stack():
    ui = {"ipywidgets", "bokeh", "jupyter_bokeh", "voila", "traitlets"}
    offenders = []
    for path in (ROOT / "sfhkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(re.split(r"\.", n)[0] in ui for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_the_observation_imports_no_survey_reader():
    """sfhkit.surveys' readers build Observations; observation.py must not import them back (no cycle),
    and the simulation-history package must not hold observed-spectrum readers."""
    source = (ROOT / "sfhkit" / "observation.py").read_text()
    modules = [node.module or "" for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in modules if m.split(".")[0] in ("surveys", "data")], modules
    assert not {"sdss.py", "manga.py", "firefly.py", "desi.py"} & {p.name for p in (ROOT / "sfhkit" / "data").glob("*.py")}
