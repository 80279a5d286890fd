"""The wheel ships every subpackage: pyproject.toml lists packages by hand (configs/ is remapped)."""
import tomllib

from tests.conftest import REPO


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"medrun"} | {"medrun." + ".".join(p.parent.relative_to(REPO / "medrun").parts)
                          for p in (REPO / "medrun").rglob("__init__.py") if p.parent != REPO / "medrun"}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert "medrun.configs" in listed
