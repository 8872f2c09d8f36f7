"""The tuning cache: round trip, batch buckets, corrupt and foreign files, priority, concurrent writers."""

import json
import multiprocessing
import sys
import warnings

import pytest
import torch

from tritongru import tuning_cache

CPU = torch.device("cpu")
CONFIG = {"block_b": 16, "block_h": 32, "block_k": 16, "num_warps": 4, "num_stages": 2, "persistent": False}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty user cache and an empty shipped directory, both private to the test."""
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setenv("TRITONGRU_CACHE_DIR", str(user))
    monkeypatch.setattr(tuning_cache, "SHIPPED_DIR", shipped)
    return user


def key(**overrides):
    args = dict(variant="cudnn", dtype=torch.float32, batch=16, hidden=64, input_size=0) | overrides
    return tuning_cache.entry_key("forward", **args)


def lookup(**overrides):
    args = dict(variant="cudnn", dtype=torch.float32, batch=16, hidden=64, input_size=0, device=CPU)
    return tuning_cache.lookup("forward", **(args | overrides))


def test_round_trip(cache_dir):
    assert lookup() is None
    path = tuning_cache.store({key(): {"config": CONFIG, "median_ms": 1.0}}, device="cpu")
    assert path.parent == cache_dir
    assert lookup() == CONFIG


def test_key_uses_batch_buckets_and_model_sizes(cache_dir):
    tuning_cache.store({key(batch=16): {"config": CONFIG}}, device="cpu")
    assert lookup(batch=9) == CONFIG, "9 and 16 share the bucket b<=32"
    assert lookup(batch=33) is None
    assert lookup(batch=8) is None
    assert lookup(hidden=128) is None
    assert lookup(variant="classic") is None
    assert lookup(dtype=torch.bfloat16) is None
    assert tuning_cache.batch_bucket(1) == "b<=1"
    assert tuning_cache.batch_bucket(10_000) == "b>512"


def test_rewrite_is_seen_through_the_in_memory_cache(cache_dir):
    tuning_cache.store({key(): {"config": CONFIG}}, device="cpu")
    assert lookup() == CONFIG
    other = CONFIG | {"block_h": 64}
    tuning_cache.store({key(): {"config": other}}, device="cpu")
    assert lookup() == other


def test_user_cache_overrides_shipped(cache_dir):
    shipped = tuning_cache.SHIPPED_DIR
    other = CONFIG | {"block_b": 32}
    tuning_cache.store({key(): {"config": other}}, device="cpu", directory=shipped)
    assert lookup() == other
    tuning_cache.store({key(): {"config": CONFIG}}, device="cpu")
    assert lookup() == CONFIG


def write_raw(cache_dir, text):
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / tuning_cache.cache_file_name("cpu")
    path.write_text(text)
    return path


def valid_document(**overrides):
    document = {
        "format": tuning_cache.FORMAT, "format_version": tuning_cache.FORMAT_VERSION, "device": "cpu",
        "triton": tuning_cache.triton_version(), "entries": {key(): {"config": CONFIG}},
    }
    return json.dumps(document | overrides)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(valid_document()[:40], id="truncated"),
        pytest.param("\x00\x01 not json", id="garbage"),
        pytest.param("[1, 2, 3]", id="json-list"),
        pytest.param(valid_document(format="someone-else"), id="foreign-format"),
        pytest.param(valid_document(format_version=99), id="future-version"),
        pytest.param(valid_document(device="NVIDIA H100"), id="other-device"),
        pytest.param(valid_document(triton="0.0.1"), id="other-triton"),
        pytest.param(valid_document(entries=[]), id="entries-not-a-table"),
    ],
)
def test_unusable_file_warns_and_falls_back(cache_dir, text):
    write_raw(cache_dir, text)
    with pytest.warns(UserWarning, match="tuning cache"):
        assert lookup() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lookup() is None, "the same unusable file warns once, then stays ignored"


def test_malformed_entry_is_skipped(cache_dir):
    write_raw(cache_dir, valid_document(entries={key(): {"config": {"block_b": 16}}}))
    with pytest.warns(UserWarning, match="malformed"):
        assert lookup() is None


def test_store_replaces_a_corrupt_file(cache_dir):
    write_raw(cache_dir, "{ truncated")
    with pytest.warns(UserWarning):
        tuning_cache.store({key(): {"config": CONFIG}}, device="cpu")
    assert lookup() == CONFIG
    assert not [p for p in cache_dir.iterdir() if p.suffix == ".tmp"], "no temporary file is left behind"


def test_store_rejects_an_entry_without_a_config(cache_dir):
    with pytest.raises(ValueError, match="config"):
        tuning_cache.store({key(): {"median_ms": 1.0}}, device="cpu")


def _writer(directory: str, worker: int, count: int) -> None:
    from pathlib import Path

    for i in range(count):
        entry_key = tuning_cache.entry_key(
            "forward", variant="cudnn", dtype=torch.float32, batch=1, hidden=1000 * worker + i, input_size=0,
        )
        tuning_cache.store({entry_key: {"config": CONFIG}}, device="cpu", directory=Path(directory))


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork to start writers quickly")
def test_concurrent_writers_lose_nothing(tmp_path):
    workers, count = 4, 15
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_writer, args=(str(tmp_path), w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    path = tmp_path / tuning_cache.cache_file_name("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entries = tuning_cache.read_file(path, device="cpu")
    assert len(entries) == workers * count
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_tf32_is_its_own_precision_in_the_key():
    sizes = dict(variant="cudnn", batch=8, hidden=64, input_size=32)
    fp32 = tuning_cache.entry_key("forward", dtype=torch.float32, **sizes)
    assert tuning_cache.entry_key("forward", dtype=torch.float32, allow_tf32=True, **sizes) == fp32.replace(
        "float32", "tf32"
    )
    bf16 = tuning_cache.entry_key("forward", dtype=torch.bfloat16, **sizes)
    assert tuning_cache.entry_key("forward", dtype=torch.bfloat16, allow_tf32=True, **sizes) == bf16
