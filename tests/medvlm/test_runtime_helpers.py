"""Shared fixtures of the runtime, converter, server and CLI tests (imported by those modules).

``offline_guard`` (autouse in every module that imports it) and ``network_guard`` (for module and
session fixtures) set the hub offline switches and refuse any socket connection that is not to the
loopback interface, so a test that would reach the network fails instead. The guard is scoped to
those tests: other packages' tests are not affected.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(host: Any) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkAccessError(AssertionError):
    """A test tried to reach a non-loopback address."""


def _check(address: Any) -> None:
    if isinstance(address, tuple) and address and not _is_loopback(address[0]):
        raise NetworkAccessError(f"test tried to reach the network: {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback(host if not isinstance(host, bytes) else host.decode()):
        raise NetworkAccessError(f"test tried to resolve a network host: {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


@contextmanager
def network_guard() -> Iterator[None]:
    """Hub offline switches + refuse every non-loopback connection, while the block runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _guarded_connect)
        mp.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
        mp.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
        yield


@pytest.fixture(autouse=True)
def offline_guard() -> Iterator[None]:
    """Every test of a module that imports this fixture runs offline (and only there)."""
    with network_guard():
        yield


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny LLaVA-Rad-shaped checkpoint per session (seed 0), built offline."""
    from medvlm.tiny import init_tiny_checkpoint

    with network_guard():
        return init_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def tiny_runtime(tiny_checkpoint: Path) -> Any:
    """The tiny checkpoint loaded by the transformers backend on CPU, slicing off."""
    from medvlm.runtime import TransformersRuntime

    with network_guard():
        return TransformersRuntime(tiny_checkpoint, device="cpu")


def test_guard_blocks_the_network() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkAccessError):
            sock.connect(("93.184.216.34", 80))
    finally:
        sock.close()
    with pytest.raises(NetworkAccessError):
        socket.getaddrinfo("huggingface.co", 443)
