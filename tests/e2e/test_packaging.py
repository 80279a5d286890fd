"""The wheel ships every subpackage of medrun/ and the configs (found by setup.py, not listed by hand)."""
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_the_wheel_holds_every_subpackage_and_the_configs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("medrun-*.whl"))).namelist())
    packages = {str(p.relative_to(REPO)) for p in (REPO / "medrun").rglob("__init__.py")}
    assert len(packages) >= 5 and packages <= names, sorted(packages - names)
    assert "medrun/configs/train.yaml" in names and "medrun/configs/experiment/quickstart.yaml" in names
