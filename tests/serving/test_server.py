"""``pictag serve``'s start: a port it cannot listen on is refused before the model loads."""

from __future__ import annotations

import socket

import pytest

from pictag.serving.server import serve


def test_a_port_in_use_is_refused_before_the_model_loads(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The run folder does not exist: the port is checked first, in a fraction of a second.
        with pytest.raises(ValueError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*--port"):
            serve(tmp_path / "no-run", port=port)
