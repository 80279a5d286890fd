"""Shared fixtures: offline environment, the real data folder, and tiny configs that train in seconds."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# Empty weight caches of the tests' own (subprocesses inherit them): a user's cached weights change no result
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="medrun-tests-hf-")
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="medrun-tests-torch-")
# One thread per pytest-xdist worker (pyproject runs two): two workers of two threads each on 2 cores oversubscribe
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDRUN_SHARED_DATA", REPO.parent / "shared" / "data"))

# A 4-16-... Sharp U-Net on 32x32 synthetic images: the same code paths as the paper configs, in seconds.
# html_report=false: the report's own tests (tests/test_report.py) draw the pages; elsewhere they cost ~0.3 s a run
TINY_MODEL = ["data.image_size=[32,32]", "data.batch_size=4", "model.filters=[4,8,16,32,64]",
              "trainer.max_epochs=1", "logger=none", "callbacks.progress=none", "html_report=false"]
TINY = ["data=synthetic", "data.count=12", "data.source_size=[32,32]", *TINY_MODEL]


@pytest.fixture(scope="session", autouse=True)
def data_cache_dir(tmp_path_factory):
    """data.cache=disk writes here, never into the user's ~/.cache (tests of the cache pass their own folder)."""
    os.environ.setdefault("MEDRUN_CACHE_DIR", str(tmp_path_factory.mktemp("data-cache")))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder {SHARED_DATA} is missing: check out ../shared next to the repo "
                    "or set MEDRUN_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """A folder for the run a module's tests share, removed when the module ends (trained runs are large)."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run folder, cv_summary) of one finished 3-fold Sharp U-Net run on synthetic images, trained once per test
    run and shared by the tests that read a run; a test that changes a run works on a copy (shutil.copytree)."""
    import medrun

    out = tmp_path_factory.mktemp("tiny_run")
    return medrun.train(medrun.compose("train", [*TINY, "cv.folds=3", "name=contract", f"paths.output_dir={out}"]))


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a seconds-long training run writing into tmp_path."""
    return [*TINY, f"paths.output_dir={tmp_path / 'outputs'}"]
