"""medrun/data/disk_cache.py and the parallel decode of medrun/data/store.py: the persistent preprocessed
cache is reused, rebuilt when its inputs change or it is damaged, built once under concurrency, and holds
pixels only."""
from __future__ import annotations

import multiprocessing
import shutil

import numpy as np
import pytest

import medrun
from medrun.cli import run as cli
from medrun.data.build import build_store, list_dataset
from medrun.data.store import SampleStore
from medrun.errors import MedrunError
from tests.conftest import TINY

ISBI = ["data=isbi2012", "data.image_size=[32,32]"]


@pytest.fixture
def isbi_copy(shared_data, tmp_path):
    """A private copy of the 30 real ISBI-2012 slices, so that tests may change files."""
    root = tmp_path / "isbi"
    shutil.copytree(shared_data / "isbi2012", root)
    return root


def store_of(root, cache_dir, *overrides, workers=1):
    cfg = medrun.compose("train", [*ISBI, f"data.root={root}", "data.cache=disk", f"data.decode_workers={workers}",
                                   f"paths.cache_dir={cache_dir}", *overrides])
    return build_store(cfg)


@pytest.fixture
def decodes(monkeypatch):
    """Counts SampleStore.decode calls (the readers plus the resize) made in this process."""
    calls = []
    decode = SampleStore.decode
    monkeypatch.setattr(SampleStore, "decode", lambda self, i: calls.append(i) or decode(self, i))
    return calls


def folders(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir() if p.is_dir())


def test_reuse_and_every_change_that_rebuilds(isbi_copy, tmp_path, decodes):
    cache = tmp_path / "cache"
    first = store_of(isbi_copy, cache)
    assert len(decodes) == 30 and len(folders(cache)) == 1
    decodes.clear()
    again = store_of(isbi_copy, cache, "data.batch_size=2", "data.augment=[]")  # options after the cache
    assert decodes == []  # the readers were not called
    assert all(np.array_equal(first.get(i)[0], again.get(i)[0]) and np.array_equal(first.get(i)[1], again.get(i)[1])
               for i in range(30))
    # the arrays equal a fresh decode (the memory cache's content)
    memory = build_store(medrun.compose("train", [*ISBI, f"data.root={isbi_copy}", "data.cache=memory"]))
    assert all(np.array_equal(memory.get(i)[0], again.get(i)[0]) for i in range(30))
    decodes.clear()
    store_of(isbi_copy, cache, "data.mask.invert=true")  # a reader option
    assert len(decodes) == 30 and len(folders(cache)) == 2
    decodes.clear()
    store_of(isbi_copy, cache, "data.image_size=[64,64]")  # the size
    assert len(decodes) == 30 and len(folders(cache)) == 3
    decodes.clear()
    image = isbi_copy / "membrane" / "train" / "image" / "0.png"
    image.write_bytes((isbi_copy / "membrane" / "train" / "image" / "1.png").read_bytes())  # a changed file
    changed = store_of(isbi_copy, cache)
    assert len(decodes) == 30 and len(folders(cache)) == 4
    assert np.array_equal(changed.get(changed.index["0"])[0], changed.get(changed.index["1"])[0])


def rewrite(path, data: bytes) -> None:
    """Replace a file by a new one: `good` still maps the old file, which must not change under it."""
    path.unlink()
    path.write_bytes(data)


def test_a_damaged_cache_is_detected_and_rebuilt(isbi_copy, tmp_path, decodes, caplog):
    cache = tmp_path / "cache"
    good = store_of(isbi_copy, cache)
    (key,) = folders(cache)
    images = cache / key / "images.npy"
    rewrite(images, images.read_bytes()[:-100])  # truncated
    decodes.clear()
    rebuilt = store_of(isbi_copy, cache)
    assert len(decodes) == 30 and "(images.npy is missing or truncated); rebuilding" in caplog.text
    assert all(np.array_equal(good.get(i)[0], rebuilt.get(i)[0]) for i in range(30))
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF  # same size, one flipped pixel
    rewrite(images, bytes(data))
    decodes.clear()
    store_of(isbi_copy, cache)
    assert len(decodes) == 30 and "does not match its checksum" in caplog.text
    assert folders(cache) == [key] and not list(cache.glob(".*partial"))
    # a file checked once and not written since is not hashed again: a reuse costs a stat
    import medrun.data.disk_cache as disk_cache

    hashed = []
    sha256 = disk_cache._sha256
    disk_cache._sha256 = lambda path: hashed.append(path.name) or sha256(path)
    try:
        store_of(isbi_copy, cache)
        assert hashed == []
        data = bytearray(images.read_bytes())
        data[-2] ^= 0xFF
        images.write_bytes(bytes(data))  # written in place: same size and inode, a new modification time
        decodes.clear()
        store_of(isbi_copy, cache)
        assert "images.npy" in hashed and len(decodes) == 30  # detected and rebuilt
    finally:
        disk_cache._sha256 = sha256


def _build_in_child(root, cache, queue):
    calls = []
    decode = SampleStore.decode
    SampleStore.decode = lambda self, i: calls.append(i) or decode(self, i)
    store = store_of(root, cache)
    queue.put((len(calls), int(np.asarray(store.get(5)[0], dtype=np.int64).sum())))


@pytest.mark.slow
def test_two_processes_building_one_key_end_with_one_cache(isbi_copy, tmp_path):
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(isbi_copy, cache, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(n for n, _ in results) == [0, 30]  # one built, the other waited and read
    assert results[0][1] == results[1][1]
    assert len(folders(cache)) == 1 and not list(cache.glob(".*partial"))


def test_parallel_decode_matches_one_process_and_a_bad_file_fails_by_name(isbi_copy, tmp_path):
    one = store_of(isbi_copy, tmp_path / "a", workers=1)
    two = store_of(isbi_copy, tmp_path / "b", workers=2)
    assert all(np.array_equal(one.get(i)[0], two.get(i)[0]) and np.array_equal(one.get(i)[1], two.get(i)[1])
               for i in range(30))
    memory = build_store(medrun.compose("train", [*ISBI, f"data.root={isbi_copy}", "data.decode_workers=2"]))
    assert all(np.array_equal(one.get(i)[0], memory.get(i)[0]) for i in range(30))
    (isbi_copy / "membrane" / "train" / "image" / "7.png").write_bytes(b"not a png")
    with pytest.raises(MedrunError, match="7.png"):
        store_of(isbi_copy, tmp_path / "c", workers=2)
    assert not any((tmp_path / "c").iterdir()) or folders(tmp_path / "c") == []  # nothing half-built is left
    with pytest.raises(MedrunError, match="data.decode_workers=0 is not valid"):
        store_of(isbi_copy, tmp_path / "d", workers=0)


def test_anonymised_cache_holds_no_file_names(shared_data, tmp_path):
    cache = tmp_path / "cache"
    cfg = medrun.compose("train", ["experiment=cascade_busi", f"data.root={shared_data}/busi_siim",
                                   "data.image_size=[32,32]", "data.cache=disk", "data.anonymize_ids=true",
                                   f"paths.cache_dir={cache}"])
    store = build_store(cfg)
    assert all(s.id.startswith("s") and len(s.id) == 17 for s in store.samples)  # keyed hashes
    names = [line.split(",")[0].strip() for line in
             (shared_data / "busi_siim" / "train-rle.csv").read_text().splitlines()[1:]]
    everything = b"".join(p.read_bytes() for p in cache.rglob("*") if p.is_file())
    everything += " ".join(p.name for p in cache.rglob("*")).encode()
    assert names and not any(n.encode() in everything for n in set(names))
    assert str(shared_data).encode() not in everything and b"busi" not in everything


def test_a_dicom_listing_is_stored_and_redone_when_a_file_changes(shared_data, tmp_path, monkeypatch):
    import os

    import pydicom

    root = tmp_path / "busi"
    shutil.copytree(shared_data / "busi_siim", root)
    cache = tmp_path / "cache"
    overrides = ["experiment=cascade_busi", f"data.root={root}", "data.image_size=[32,32]", "data.cache=disk",
                 f"paths.cache_dir={cache}"]
    headers = []
    read = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: headers.append(a[0]) or read(*a, **k))
    first = list_dataset(medrun.compose("train", overrides))
    assert len(headers) == 267 and len(list((cache / "listings").glob("*.json"))) == 1
    headers.clear()
    again = list_dataset(medrun.compose("train", [*overrides, "data.image_size=[64,64]"]))
    assert headers == []  # no DICOM header read: the stored listing, whatever the size
    assert [(s.id, s.image, s.group, s.label, s.extra) for s in again.samples] == \
        [(s.id, s.image, s.group, s.label, s.extra) for s in first.samples]
    assert np.array_equal(again.load(again.samples[5])[1], first.load(first.samples[5])[1])
    stored = (next((cache / "listings").glob("*.json"))).read_text()
    assert "PatientID" not in stored and "ANON-" not in stored  # patients only as pseudonymous groups
    touched = first.samples[0].image
    headers.clear()
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    list_dataset(medrun.compose("train", overrides))
    assert len(headers) == 267  # a changed file: listed again
    headers.clear()
    list_dataset(medrun.compose("train", [*overrides, "data.anonymize_ids=true"]))
    assert len(headers) == 267 and len(list((cache / "listings").glob("*.json"))) == 2  # never stored anonymised
    assert cli(["cache", "clear", f"paths.cache_dir={cache}"]) == 0 and not (cache / "listings").exists()


def test_memory_and_disk_give_identical_results(tmp_path):
    base = [*TINY, "cv=holdout", "trainer.deterministic=true", "trainer.max_epochs=2",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    summaries = [medrun.train(medrun.compose("train", [*base, f"data.cache={mode}",
                                                       f"paths.output_dir={tmp_path / mode}"]))[1]
                 for mode in ("memory", "disk")]
    assert summaries[0]["folds"][0]["metrics"] == summaries[1]["folds"][0]["metrics"]
    assert len(folders(tmp_path / "cache")) == 1


def test_cache_command_lists_and_clears(isbi_copy, tmp_path, capsys):
    cache = tmp_path / "cache"
    store_of(isbi_copy, cache)
    store_of(isbi_copy, cache, "data.image_size=[64,64]")
    assert cli(["cache", "list", f"paths.cache_dir={cache}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"2 cache(s) in {cache}") and out.count("30 samples") == 2 and "isbi" in out
    key = folders(cache)[0]
    assert cli(["cache", "clear", f"key={key}", f"paths.cache_dir={cache}"]) == 0
    assert key not in folders(cache) and len(folders(cache)) == 1
    with pytest.raises(MedrunError, match="key='nope' is not a cache key"):
        cli(["cache", "clear", "key=nope", f"paths.cache_dir={cache}"])
    assert cli(["cache", "clear", f"paths.cache_dir={cache}"]) == 0
    assert folders(cache) == []
    with pytest.raises(MedrunError, match="data.cache='ram' is not valid; valid: memory, disk, off"):
        build_store(medrun.compose("train", [*ISBI, f"data.root={isbi_copy}", "data.cache=ram"]))


def test_samples_of_another_shape_or_type_are_refused_by_name(tmp_path):
    from medrun.data.disk_cache import open_or_build
    from medrun.data.samples import Dataset, Sample

    images = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)]
    dataset = Dataset([Sample(id=f"case{i}", extra={"i": i}) for i in range(3)],
                      lambda s: (images[s.extra["i"]], np.zeros((8, 8), np.uint8)))
    store = SampleStore(dataset, (8, 8), cache="disk")
    with pytest.raises(MedrunError, match=r"the image of sample case2 is float32 \[8, 8, 3\] where the first was "
                                          r"uint8 \[8, 8, 3\]; use data.cache=memory"):
        open_or_build(tmp_path, "k", 3, lambda: store.decode(0), lambda p: store.fill(p, [1, 2]), {})
    assert list(tmp_path.iterdir()) == [tmp_path / "k.lock"]  # the partial build was removed


def restore_times(path, st) -> None:
    import os

    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def stored_png(array) -> bytes:
    """An uncompressed PNG: its size depends on the pixel count only, so two images of one size are two files of
    one length."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


@pytest.mark.parametrize("cache_key", ["auto", "stat", "content"])
def test_a_file_rewritten_in_place_with_its_size_and_time_kept_is_a_change(isbi_copy, tmp_path, decodes, cache_key):
    from PIL import Image

    cache = tmp_path / "cache"
    paths = [isbi_copy / "membrane" / "train" / name / "0.png" for name in ("image", "label")]
    for path in paths:
        path.write_bytes(stored_png(np.asarray(Image.open(path))))
    store_of(isbi_copy, cache, f"data.cache_key={cache_key}")
    for path in paths:  # an image, then a mask
        st = path.stat()
        changed = 255 - np.asarray(Image.open(path))
        with open(path, "r+b") as f:  # same inode, same length, other pixels
            f.write(stored_png(changed))
        restore_times(path, st)
        assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
        decodes.clear()
        store = store_of(isbi_copy, cache, f"data.cache_key={cache_key}")
        assert len(decodes) == 30, path  # not reused
        i = store.index["0"]
        assert all(np.array_equal(a, b) for a, b in zip(store.get(i), store.decode(i)))  # the new pixels


def test_a_damaged_cache_file_with_its_time_restored_is_hashed_again(isbi_copy, tmp_path, decodes, caplog):
    cache = tmp_path / "cache"
    store_of(isbi_copy, cache)
    (key,) = folders(cache)
    images = cache / key / "images.npy"
    st = images.stat()
    with open(images, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    restore_times(images, st)
    decodes.clear()
    store_of(isbi_copy, cache)
    assert len(decodes) == 30 and "does not match its checksum" in caplog.text


def test_a_symlinked_cache_entry_is_never_used(shared_data, isbi_copy, tmp_path, decodes, caplog):
    cache = tmp_path / "cache"
    store_of(isbi_copy, cache)
    (key,) = folders(cache)
    other = tmp_path / "other"  # another dataset's cache, linked in under this dataset's key
    (cache / key).rename(other)
    (cache / key).symlink_to(other, target_is_directory=True)
    decodes.clear()
    store_of(isbi_copy, cache)
    assert len(decodes) == 30 and "is a symbolic link; replacing it" in caplog.text
    assert not (cache / key).is_symlink() and (other / "images.npy").is_file()  # the link went, not its target


def test_cache_clear_deletes_only_cache_entries_inside_the_cache_folder(isbi_copy, tmp_path):
    cache = tmp_path / "cache"
    store_of(isbi_copy, cache)
    (key,) = folders(cache)
    outside = tmp_path / "X"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (cache / "notes").mkdir()  # a folder of the user's beside the caches
    (cache / "foo.partial").mkdir()  # named like a build but none of medrun's
    for bad in ("../X", str(outside), "notes", "foo.partial", "listings"):
        with pytest.raises(MedrunError, match="is not a cache key"):
            cli(["cache", "clear", f"key={bad}", f"paths.cache_dir={cache}"])
    assert (outside / "keep.txt").is_file()
    with pytest.raises(MedrunError, match="no cache 'aaaaaaaaaaaaaaaaaaaaaaaa'.*valid: " + key):
        medrun.api.clear_caches(str(cache), "a" * 24)
    killed = cache / f".{key}.999999999.partial"  # a killed build's leftover (no such process)
    killed.mkdir()
    assert medrun.api.clear_caches(str(cache))[1] == [key]
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == ["foo.partial", "notes"]
    assert (outside / "keep.txt").is_file()


def test_a_cache_folder_that_cannot_be_written_is_one_line(isbi_copy, tmp_path):
    for bad in ("/proc/medrun-cache", str(tmp_path / "file")):
        (tmp_path / "file").write_text("")
        with pytest.raises(MedrunError, match=r"paths.cache_dir=.*(cannot be|data.cache=memory)"):
            store_of(isbi_copy, bad)


def _small_disk(tmp_path):
    """A 1 MB tmpfs when this process may mount one (root, as CI runs), else None."""
    import subprocess

    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    return folder if done.returncode == 0 else None


def test_a_full_disk_while_building_is_one_line_and_leaves_nothing(isbi_copy, tmp_path, monkeypatch):
    import errno
    import subprocess

    import medrun.data.disk_cache as disk_cache

    small = _small_disk(tmp_path)
    try:
        if small is None:  # no mount here: the reservation reports what a full disk reports
            def full(fd, offset, length):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(disk_cache.os, "posix_fallocate", full)
        cache = small or tmp_path / "cache"
        with pytest.raises(MedrunError, match=r"paths.cache_dir=.* is full; free space there"):
            store_of(isbi_copy, cache, "data.image_size=[256,256]")  # 30 x 256 x 256 x 3 bytes: about 6 MB
        assert not [p for p in cache.iterdir() if p.is_dir()]  # no .partial left behind
    finally:
        if small is not None:
            subprocess.run(["umount", str(small)], check=True)
