"""A listener that is not a Triton HTTP server (another protocol, or HTTP with a body that is not
Triton's JSON) gets one sentence naming the URL, exit 2, not a catch-all error."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from click.testing import CliRunner

pytest.importorskip("tritonclient.http", reason="needs tritonclient[http]")

from fna_deploy.cli import cli  # noqa: E402


def _raw_listener(reply: bytes):
    """A TCP server that answers every connection with ``reply`` and closes it (e.g. an SSH banner)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(reply)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return server, f"127.0.0.1:{server.getsockname()[1]}"


class _BadJson(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's spelling
        body = b"<html>not json</html>" if "config" in self.path else b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("kind", ["not-http", "bad-json"])
def test_a_listener_that_is_not_triton_gets_one_sentence(kind):
    if kind == "not-http":
        server, url = _raw_listener(b"SSH-2.0-OpenSSH_9.6\r\n")
        stop = server.close
    else:
        http = HTTPServer(("127.0.0.1", 0), _BadJson)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        url, stop = f"127.0.0.1:{http.server_address[1]}", (lambda: (http.shutdown(), http.server_close()))
    try:
        result = CliRunner().invoke(cli, ["infer", url, "vit", "--random", "1"])
    finally:
        stop()
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert url in lines[0] and "did not answer as a Triton HTTP server" in lines[0] and "unexpected" not in lines[0], lines
