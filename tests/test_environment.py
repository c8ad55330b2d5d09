"""The project's metadata agrees with itself: pyproject.toml, the conda environments, CITATION.cff, the package's
``__version__``, and the grid schema's JSON-schema dialect (the one Snakemake validates with)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import dgmbench

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

REPO = Path(__file__).resolve().parents[1]

# conda-forge name → PyPI name, where they differ. Every other dependency has one name in both.
CONDA_TO_PYPI = {
    "pytorch": "torch",  # conda-forge ships torch as `pytorch`
    "matplotlib-base": "matplotlib",  # matplotlib without the Qt backend (the suite writes PNGs only)
    "snakemake-minimal": "snakemake",  # Snakemake without its optional remote-storage plugins
}
# In the conda files but not a dependency of the package: the interpreter and the installer of the pip: section.
CONDA_ONLY = {"python", "pip"}
# Spelled as `name>=floor` in both files; any other spelling is a mistake this test reports.
SPEC = re.compile(r"^([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9.]*)$")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def floors(specs: list[str], where: str) -> dict[str, str]:
    out = {}
    for spec in specs:
        m = SPEC.match(spec.strip())
        assert m, f"{where}: {spec!r} is not `name>=floor`"
        out[m.group(1).lower()] = m.group(2)
    return out


def conda_dependencies(path: Path) -> tuple[dict[str, str], list[str]]:
    """(PyPI name → version floor, the pip: entries that are not requirements, e.g. `-e .`) of a conda env file."""
    env = yaml.safe_load(path.read_text())
    specs, other = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep["pip"]:
                (other if spec.startswith("-") else specs).append(spec)
        elif dep.split("=")[0] not in CONDA_ONLY:
            specs.append(dep)
    by_conda_name = floors(specs, path.name)
    return {CONDA_TO_PYPI.get(name, name): floor for name, floor in by_conda_name.items()}, other


def test_conda_environment_pins_agree_with_pyproject():
    """Every dependency of the package (and of its dev extra, so the tests run in the conda env) is in
    environment.yml with the same floor, and the environment holds nothing the package does not declare."""
    project = pyproject()["project"]
    wanted = floors(project["dependencies"] + project["optional-dependencies"]["dev"], "pyproject.toml")
    have, other = conda_dependencies(REPO / "environment.yml")
    assert have == wanted, (f"only in pyproject: {sorted(wanted.keys() - have.keys())}; only in environment.yml: "
                            f"{sorted(have.keys() - wanted.keys())}; floors differ: "
                            f"{ {k: (wanted[k], have[k]) for k in wanted.keys() & have.keys() if wanted[k] != have[k]} }")
    assert other == ["-e ."]  # the package itself, so `conda activate dgmbench` gives the `dgmbench` command


def test_workflow_environment_is_environment_yml_without_the_package():
    """The rules' environment (workflow/envs/dgmbench.yaml) is the same list minus `-e .`, and it is the one every
    rule names."""
    people, _ = conda_dependencies(REPO / "environment.yml")
    rules, other = conda_dependencies(REPO / "workflow" / "envs" / "dgmbench.yaml")
    assert rules == people and other == []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        named = re.findall(r"conda:\s*\n\s*\"([^\"]+)\"", smk.read_text())
        assert all((smk.parent / n).resolve() == REPO / "workflow" / "envs" / "dgmbench.yaml" for n in named), smk


def test_citation_and_versions_agree():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert str(cff["version"]) == dgmbench.__version__ == pyproject()["project"]["version"]
    assert cff["license"] == pyproject()["project"]["license"] == "MIT"
    assert {"title", "authors", "abstract", "keywords", "message"} <= cff.keys()
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert pyproject()["project"]["license-files"] == ["LICENSE"]


def test_schema_dialect_is_the_one_snakemake_validates_with():
    """Snakemake (≥ 9.6) validates with Draft 2020-12 and warns on every call when the schema declares another
    dialect. The package checks grids with Draft 7 (dgmbench.config): both must accept the schema and agree on
    every shipped grid and on grids they must refuse."""
    import jsonschema

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["$schema"] == jsonschema.Draft202012Validator.META_SCHEMA["$schema"]
    assert (REPO / "dgmbench" / "resources" / "config.schema.yaml").read_bytes() == \
        (REPO / "workflow" / "schemas" / "config.schema.yaml").read_bytes()
    new, old = jsonschema.Draft202012Validator, jsonschema.Draft7Validator
    new.check_schema(schema)
    old.check_schema(schema)
    grids = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "config").glob("*.yaml"))]
    bad = [{"seeds": [-1]}, {"seeds": [0, 0]}, {"datasets": []}, {"nope": 1}, {"models": "vae"}]
    for grid in grids + bad:
        assert new(schema).is_valid(grid) == old(schema).is_valid(grid), grid
    assert all(new(schema).is_valid(g) for g in grids) and not any(new(schema).is_valid(g) for g in bad)
