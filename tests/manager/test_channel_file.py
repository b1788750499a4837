"""The node channel file written by ``grouposcore manager allow``: round trip, 0600, and
malformed files rejected with our own error only."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grouposcore.errors import ManagerMessageError
from grouposcore.manager.runtime import read_channel_file, write_channel_file
from grouposcore.manager.store import ChannelMaterial

CHANNEL = ChannelMaterial("n1", b"\x01" * 16, b"\x02" * 8, b"", b"\x05", None, 10, 5)


def test_round_trip_and_mode(tmp_path: Path) -> None:
    path = write_channel_file(
        tmp_path / "sub" / "n1.json",
        CHANNEL,
        manager="coap://[::1]:5683",
        gm_credentials={"g": b"\xa0"},
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_channel_file(path) == (CHANNEL, "coap://[::1]:5683", {"g": b"\xa0"})
    with_ctx = ChannelMaterial("n1", b"\x01", b"", b"\x07", b"\x05", b"\xaa", 10, 5)
    write_channel_file(path, with_ctx)
    assert read_channel_file(path) == (with_ctx, None, {})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("master_secret"),
    lambda d: d.update(version=2),
    lambda d: d.update(node_sender_id="zz"),
    lambda d: d.update(aead_alg="ten"),
    lambda d: d.update(manager=5),
    lambda d: d.update(gm_credentials=["g"]),
])  # fmt: skip
def test_malformed_fields(tmp_path: Path, mutate) -> None:  # type: ignore[no-untyped-def]
    path = write_channel_file(tmp_path / "c.json", CHANNEL)
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ManagerMessageError):
        read_channel_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManagerMessageError):
        read_channel_file(tmp_path / "nope.json")


_KEYS = [
    "version",
    "node",
    "master_secret",
    "master_salt",
    "gm_sender_id",
    "node_sender_id",
    "id_context",
    "aead_alg",
    "hkdf_alg",
    "manager",
    "gm_credentials",
]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
_VALID = {
    "version": 1,
    "node": "n",
    "master_secret": "01",
    "master_salt": "",
    "gm_sender_id": "",
    "node_sender_id": "05",
    "id_context": None,
    "aead_alg": 10,
    "hkdf_alg": 5,
}


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda v: json.dumps(v).encode()),
    # a valid file with some fields replaced by arbitrary JSON values
    st.dictionaries(st.sampled_from(_KEYS), _JSON, min_size=1, max_size=4).map(
        lambda changes: json.dumps({**_VALID, **changes}).encode()
    ),
))  # fmt: skip
def test_random_files_raise_only_our_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.json"
    path.write_bytes(data)
    path.chmod(0o600)
    try:
        read_channel_file(path)
    except ManagerMessageError:
        pass


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620, 0o602, 0o666])
def test_channel_file_accessible_by_other_users_is_refused(tmp_path: Path, mode: int) -> None:
    """The file holds the GM channel's Master Secret: refused once other users can read or
    write it, with the chmod that fixes it; 0600 and 0400 are fine."""
    path = write_channel_file(tmp_path / "c.json", CHANNEL)
    path.chmod(mode)
    with pytest.raises(ManagerMessageError, match=rf"other users; run: chmod 600 {path}$"):
        read_channel_file(path)
    path.chmod(0o400)
    assert read_channel_file(path)[0] == CHANNEL
