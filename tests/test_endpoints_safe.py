"""Safe by default: without keys a node binds only where no other machine reaches it."""

from __future__ import annotations

import logging

import pytest

from transport.endpoints import check_exposure, is_loopback

LOCAL = [
    "tcp://127.0.0.1:5555",
    "tcp://127.0.0.1:0",
    "tcp://127.9.8.7:*",
    "tcp://[::1]:5555",
    "tcp://localhost:5555",
    "ipc:///tmp/agent.sock",
    "inproc://agent",
]
EXPOSED = [
    "tcp://0.0.0.0:5555",
    "tcp://*:5555",
    "tcp://[::]:5555",
    "tcp://10.1.2.3:5555",
    "tcp://192.168.0.7:0",
    "tcp://[2001:db8::1]:5555",
    "tcp://[::ffff:10.0.0.1]:5555",
]


@pytest.mark.parametrize("bind", LOCAL)
def test_loopback_and_local_transports_need_no_keys(
    bind: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert is_loopback(bind)
    with caplog.at_level(logging.WARNING):
        check_exposure(bind, secured=False)
    assert not caplog.records


@pytest.mark.parametrize("bind", EXPOSED)
def test_an_exposed_bind_without_keys_is_refused(bind: str) -> None:
    assert not is_loopback(bind)
    with pytest.raises(ValueError, match="insecure=True") as error:
        check_exposure(bind, secured=False)
    assert "identity=" in str(error.value) and bind in str(error.value)


@pytest.mark.parametrize("bind", EXPOSED)
def test_keys_allow_any_bind_quietly(bind: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_exposure(bind, secured=True)
        check_exposure(bind, secured=True, insecure=True)
    assert not caplog.records


def test_insecure_binds_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="transport.zmq"):
        check_exposure("tcp://0.0.0.0:5555", secured=False, insecure=True)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "insecure=True" in caplog.records[0].getMessage()


def test_a_bad_bind_is_still_a_bad_bind() -> None:
    with pytest.raises(ValueError, match="port"):
        check_exposure("tcp://127.0.0.1:99999", secured=False, insecure=True)
