from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agegender.data import cache
from agegender.data.cache import decode_samples, default_cache_dir, load_face
from agegender.data.readers import read_utkface


@pytest.fixture
def samples(utkface):
    return read_utkface(utkface.path).samples


def test_decodes_resized_rgb_and_skips_unreadable(utkface, samples, cache_dir):
    decoded = decode_samples(samples, 32, cache_dir)
    assert decoded.images.shape == (len(samples) - 2, 32, 32, 3)
    assert decoded.images.dtype == np.uint8
    assert len(decoded.samples) == len(decoded.images)
    reasons = {Path(s.path).name: s.reason for s in decoded.skipped}
    assert set(reasons) == set(utkface.undecodable)
    assert reasons[utkface.zero_byte] == "empty file"
    assert "truncated" in reasons[utkface.truncated]
    # images stay aligned with their samples
    for index in (0, 7, len(decoded.samples) - 1):
        np.testing.assert_array_equal(decoded.images[index], load_face(decoded.samples[index].path, 32))


def test_second_call_is_served_from_the_cache(samples, cache_dir, monkeypatch):
    first = decode_samples(samples, 32, cache_dir)

    def no_decoding(path, size):
        raise AssertionError(f"decoded {path} again despite the cache")

    monkeypatch.setattr(cache, "load_face", no_decoding)
    second = decode_samples(samples, 32, cache_dir)
    np.testing.assert_array_equal(first.images, second.images)
    assert first.samples == second.samples
    assert first.skipped == second.skipped


def test_cache_files_are_written_atomically(samples, cache_dir):
    decode_samples(samples, 32, cache_dir)
    files = sorted(p.suffix for p in cache_dir.iterdir())
    assert files == [".json", ".npy"]


def test_key_changes_when_a_file_changes(utkface, samples, cache_dir, monkeypatch):
    before = decode_samples(samples, 32, cache_dir)
    changed = next(s.path for s in before.samples)
    source = utkface.path / utkface.good[-1]
    changed.write_bytes(source.read_bytes())
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse-mtime filesystems
    calls = []
    real = cache.load_face
    monkeypatch.setattr(cache, "load_face", lambda path, size: calls.append(path) or real(path, size))
    after = decode_samples(samples, 32, cache_dir)
    assert len(calls) == len(samples)  # everything re-decoded under a new key
    assert not np.array_equal(before.images[0], after.images[0])
    np.testing.assert_array_equal(after.images[0], load_face(source, 32))
    assert len(list(cache_dir.glob("*.npy"))) == 2


def test_key_depends_on_image_size_and_file_list(samples):
    assert cache._cache_key(samples, 32) != cache._cache_key(samples, 48)
    assert cache._cache_key(samples, 32) != cache._cache_key(samples[1:], 32)
    assert cache._cache_key(samples, 32) == cache._cache_key(list(samples), 32)


def test_different_sizes_are_cached_separately(samples, cache_dir):
    small = decode_samples(samples, 16, cache_dir)
    large = decode_samples(samples, 32, cache_dir)
    assert small.images.shape[1:] == (16, 16, 3)
    assert large.images.shape[1:] == (32, 32, 3)


def test_all_unreadable_gives_an_empty_array(utkface, cache_dir):
    samples = [s for s in read_utkface(utkface.path).samples if s.path.name in utkface.undecodable]
    decoded = decode_samples(samples, 32, cache_dir)
    assert decoded.images.shape == (0, 32, 32, 3)
    assert decoded.samples == [] and len(decoded.skipped) == 2
    again = decode_samples(samples, 32, cache_dir)  # and the cached empty array loads back
    assert again.images.shape == (0, 32, 32, 3)


def test_default_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "agegender"


def test_without_cache_dir_it_uses_the_default(samples, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    decode_samples(samples[:3], 16)
    assert len(list((tmp_path / "xdg" / "agegender").glob("*.npy"))) == 1


def test_a_file_that_turned_into_a_symlink_loop_is_skipped_not_fatal(utkface, samples, cache_dir):
    # The reader skips such files; this one became a loop after it was read (resolve() raises on it).
    looping = samples[0].path
    looping.unlink()
    looping.symlink_to(looping.name)
    decoded = decode_samples(samples, 32, cache_dir)
    reasons = {Path(s.path).name: s.reason for s in decoded.skipped}
    assert reasons[looping.name] == "cannot read file (Too many levels of symbolic links)"
    assert len(decoded.samples) == len(samples) - 3  # the loop plus the two undecodable files


@pytest.mark.parametrize("damage", ["truncated", "object array", "wrong row count", "bad index"])
def test_a_damaged_cache_is_decoded_again_with_a_warning(samples, cache_dir, damage):
    first = decode_samples(samples, 32, cache_dir)
    array_path = next(cache_dir.glob("*.npy"))
    if damage == "truncated":
        array_path.write_bytes(array_path.read_bytes()[:1000])
    elif damage == "object array":
        np.save(array_path, np.array([object()] * 3, dtype=object), allow_pickle=True)
    elif damage == "wrong row count":
        np.save(array_path, first.images[:-1])
    else:
        array_path.with_suffix(".json").write_text("[not json")
    with pytest.warns(UserWarning, match="cache is damaged; decoding the images again"):
        again = decode_samples(samples, 32, cache_dir)
    np.testing.assert_array_equal(again.images, first.images)
    assert again.samples == first.samples
    third = decode_samples(samples, 32, cache_dir)  # rebuilt: no warning now
    np.testing.assert_array_equal(third.images, first.images)
