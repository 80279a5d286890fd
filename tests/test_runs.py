"""medrun/runs.py: checkpoint loading says whether a file is unsafe or damaged."""
import pytest
import torch

from medrun.errors import MedrunError
from medrun.runs import load_checkpoint


def test_a_truncated_checkpoint_is_reported_as_damaged_never_as_unsafe(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for allow in (False, True):
        with pytest.raises(MedrunError, match="is damaged or not a PyTorch checkpoint") as e:
            load_checkpoint(path, allow_unsafe=allow)
        assert "allow_unsafe_checkpoints" not in str(e.value)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(MedrunError, match="empty.ckpt is damaged"):
        load_checkpoint(tmp_path / "empty.ckpt")
