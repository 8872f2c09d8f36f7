"""The tuning cache: round trip, batch buckets, corrupt, unreadable and foreign files, invalid entries,
priority, concurrent writers."""

import json
import multiprocessing
import sys
import warnings

import pytest
import torch

from tritongru import tuning_cache
from tritongru.configs import KernelConfig
from tritongru.environment import device_name, triton_version

CONFIG = {
    "block_b": 16,
    "block_h": 32,
    "block_k": 64,
    "num_warps": 4,
    "num_stages": 2,
    "persistent": False,
    "split_k": True,
    "batch_blocks": 1,
}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty user cache and an empty shipped directory, both private to the test."""
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("TRITONGRU_CACHE_DIR", str(user))
    monkeypatch.setattr(tuning_cache, "SHIPPED_DIR", shipped)
    return user


@pytest.fixture
def name(device):
    """The name the test device's cache file is filed under."""
    return device_name(device)


def key(**overrides):
    args = dict(variant="cudnn", dtype=torch.float32, batch=16, hidden=64, input_size=0) | overrides
    return tuning_cache.entry_key("forward", **args)


@pytest.fixture
def lookup(device):
    def lookup(**overrides):
        args = dict(variant="cudnn", dtype=torch.float32, batch=16, hidden=64, input_size=0, device=device)
        return tuning_cache.lookup("forward", **(args | overrides))

    return lookup


def test_round_trip(cache_dir, name, lookup):
    assert lookup() is None
    path = tuning_cache.store({key(): {"config": CONFIG, "median_ms": 1.0}}, device=name)
    assert path.parent == cache_dir
    assert lookup() == CONFIG


def test_a_config_that_streams_part_of_its_weights_round_trips(cache_dir, name, lookup):
    """``streamed_chunks`` is optional in a stored config (files written before it are read as holding every
    chunk) and comes back as stored."""
    streaming = CONFIG | {"persistent": True, "streamed_chunks": 3}
    tuning_cache.store({key(): {"config": streaming}}, device=name)
    expected = KernelConfig(16, 32, 64, persistent=True, split_k=True, streamed_chunks=3)
    assert KernelConfig.from_dict(lookup()) == expected
    assert KernelConfig.from_dict(CONFIG).streamed_chunks == 0


def test_key_uses_batch_buckets_and_model_sizes(cache_dir, name, lookup):
    tuning_cache.store({key(batch=16): {"config": CONFIG}}, device=name)
    assert lookup(batch=9) == CONFIG, "9 and 16 share the bucket b<=32"
    assert lookup(batch=33) is None
    assert lookup(batch=8) is None
    assert lookup(hidden=128) is None
    assert lookup(variant="classic") is None
    assert lookup(dtype=torch.bfloat16) is None
    assert lookup(store_gates=True) is None, "a forward that saves its gates compiles another kernel"
    assert tuning_cache.batch_bucket(1) == "b<=1"
    assert tuning_cache.batch_bucket(10_000) == "b>512"


def test_store_gates_is_its_own_entry(cache_dir, name, lookup):
    training = CONFIG | {"block_h": 64}
    tuning_cache.store({key(): {"config": CONFIG}, key(store_gates=True): {"config": training}}, device=name)
    assert lookup() == CONFIG
    assert lookup(store_gates=True) == training
    assert key(store_gates=True) == key().replace("gates=0", "gates=1")


def test_rewrite_is_seen_through_the_in_memory_cache(cache_dir, name, lookup):
    tuning_cache.store({key(): {"config": CONFIG}}, device=name)
    assert lookup() == CONFIG
    other = CONFIG | {"block_h": 64}
    tuning_cache.store({key(): {"config": other}}, device=name)
    assert lookup() == other


def test_user_cache_overrides_shipped(cache_dir, name, lookup):
    shipped = tuning_cache.SHIPPED_DIR
    other = CONFIG | {"block_b": 32}
    tuning_cache.store({key(): {"config": other}}, device=name, directory=shipped)
    assert lookup() == other
    tuning_cache.store({key(): {"config": CONFIG}}, device=name)
    assert lookup() == CONFIG


def write_raw(cache_dir, name, text):
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / tuning_cache.cache_file_name(name)
    path.write_text(text)
    return path


def valid_document(name, **overrides):
    document = {
        "format": tuning_cache.FORMAT,
        "format_version": tuning_cache.FORMAT_VERSION,
        "device": name,
        "triton": triton_version(),
        "entries": {key(): {"config": CONFIG}},
    }
    return json.dumps(document | overrides)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(lambda name: valid_document(name)[:40], id="truncated"),
        pytest.param(lambda name: "\x00\x01 not json", id="garbage"),
        pytest.param(lambda name: "[1, 2, 3]", id="json-list"),
        pytest.param(lambda name: valid_document(name, format="someone-else"), id="foreign-format"),
        pytest.param(lambda name: valid_document(name, format_version=1), id="older-version"),
        pytest.param(lambda name: valid_document(name, format_version=99), id="future-version"),
        pytest.param(lambda name: valid_document(name, device="NVIDIA Z999"), id="other-device"),
        pytest.param(lambda name: valid_document(name, triton="0.0.1"), id="other-triton"),
        pytest.param(lambda name: valid_document(name, entries=[]), id="entries-not-a-table"),
    ],
)
def test_unusable_file_warns_and_falls_back(cache_dir, name, lookup, text):
    write_raw(cache_dir, name, text(name))
    with pytest.warns(UserWarning, match="tuning cache"):
        assert lookup() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lookup() is None, "the same unusable file warns once, then stays ignored"


def test_unreadable_file_warns(cache_dir, name, lookup):
    """A cache file that exists but cannot be read (here a directory in its place) warns, once."""
    (cache_dir / tuning_cache.cache_file_name(name)).mkdir(parents=True)
    with pytest.warns(UserWarning, match="unreadable tuning cache"):
        assert lookup() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lookup() is None


def test_unreachable_cache_directory_warns(tmp_path, monkeypatch, lookup):
    """A user cache that cannot be searched (here a file where its directory should be) warns, once."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    monkeypatch.setenv("TRITONGRU_CACHE_DIR", str(blocked))
    monkeypatch.setattr(tuning_cache, "SHIPPED_DIR", tmp_path / "shipped")
    with pytest.warns(UserWarning, match=f"unreadable tuning cache {blocked}"):
        assert lookup() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lookup() is None


def test_a_missing_file_is_silent(cache_dir, lookup):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lookup() is None


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        pytest.param({"config": {"block_b": 16}}, "lacks", id="missing-keys"),
        pytest.param({"median_ms": 1.0}, "no 'config'", id="no-config"),
        pytest.param("fast", "no 'config'", id="not-a-table"),
        pytest.param({"config": CONFIG | {"block_b": 3}}, "block_b 3", id="block-not-a-power-of-two"),
        pytest.param({"config": CONFIG | {"block_h": 8}}, "block_h 8", id="block-below-16"),
        pytest.param({"config": CONFIG | {"block_k": 32.0}}, "block_k 32.0", id="block-a-float"),
        pytest.param({"config": CONFIG | {"num_warps": 3}}, "num_warps 3", id="warps-not-allowed"),
        pytest.param({"config": CONFIG | {"num_stages": 0}}, "num_stages 0", id="stages-zero"),
        pytest.param({"config": CONFIG | {"num_stages": True}}, "num_stages True", id="stages-a-bool"),
        pytest.param({"config": CONFIG | {"persistent": "no"}}, "persistent 'no'", id="persistent-a-string"),
        pytest.param({"config": CONFIG | {"streamed_chunks": 2}}, "streamed_chunks 2", id="streamed-per-step"),
        pytest.param(
            {"config": CONFIG | {"persistent": True, "streamed_chunks": -1}}, "streamed_chunks -1", id="streamed-neg"
        ),
        pytest.param({"config": CONFIG | {"max_wave_chunks": 1}}, "max_wave_chunks 1", id="wave-per-step"),
        pytest.param(
            {"config": CONFIG | {"persistent": True, "max_wave_chunks": 1.5}}, "max_wave_chunks 1.5", id="wave-float"
        ),
    ],
)
def test_an_invalid_entry_is_ignored_with_the_file_and_key(cache_dir, name, lookup, entry, why):
    good = CONFIG | {"block_h": 64}
    path = write_raw(cache_dir, name, valid_document(name, entries={key(): entry, key(hidden=128): {"config": good}}))
    with pytest.warns(UserWarning, match="malformed") as caught:
        assert lookup() is None
    [message] = [str(w.message) for w in caught if "malformed" in str(w.message)]
    assert str(path) in message and repr(key()) in message and why in message
    assert lookup(hidden=128) == good, "the file's valid entries are still used"


def test_an_invalid_user_entry_falls_back_to_the_shipped_one(cache_dir, name, lookup):
    tuning_cache.store({key(): {"config": CONFIG}}, device=name, directory=tuning_cache.SHIPPED_DIR)
    write_raw(cache_dir, name, valid_document(name, entries={key(): {"config": CONFIG | {"persistent": "no"}}}))
    with pytest.warns(UserWarning, match="malformed"):
        assert lookup() == CONFIG


def test_store_replaces_a_corrupt_file(cache_dir, name, lookup):
    write_raw(cache_dir, name, "{ truncated")
    with pytest.warns(UserWarning):
        tuning_cache.store({key(): {"config": CONFIG}}, device=name)
    assert lookup() == CONFIG
    assert not [p for p in cache_dir.iterdir() if p.suffix == ".tmp"], "no temporary file is left behind"


def test_store_rejects_an_entry_without_a_valid_config(cache_dir, name):
    with pytest.raises(ValueError, match="config"):
        tuning_cache.store({key(): {"median_ms": 1.0}}, device=name)
    with pytest.raises(ValueError, match="block_b 3"):
        tuning_cache.store({key(): {"config": CONFIG | {"block_b": 3}}}, device=name)


def _writer(directory: str, name: str, worker: int, count: int) -> None:
    from pathlib import Path

    for i in range(count):
        entry_key = tuning_cache.entry_key(
            "forward",
            variant="cudnn",
            dtype=torch.float32,
            batch=1,
            hidden=1000 * worker + i,
            input_size=0,
        )
        tuning_cache.store({entry_key: {"config": CONFIG}}, device=name, directory=Path(directory))


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork to start writers quickly")
def test_concurrent_writers_lose_nothing(tmp_path, name):
    workers, count = 4, 15
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_writer, args=(str(tmp_path), name, w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    path = tmp_path / tuning_cache.cache_file_name(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entries = tuning_cache.read_file(path, device=name)
    assert len(entries) == workers * count
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_precisions_are_named_once_and_tf32_is_its_own():
    sizes = dict(variant="cudnn", batch=8, hidden=64, input_size=32)
    fp32 = tuning_cache.entry_key("forward", dtype=torch.float32, **sizes)
    assert "|fp32|" in fp32
    assert tuning_cache.entry_key("forward", dtype=torch.float32, allow_tf32=True, **sizes) == fp32.replace(
        "|fp32|", "|tf32|"
    )
    bf16 = tuning_cache.entry_key("forward", dtype=torch.bfloat16, **sizes)
    assert "|bf16|" in bf16
    assert tuning_cache.entry_key("forward", dtype=torch.bfloat16, allow_tf32=True, **sizes) == bf16
