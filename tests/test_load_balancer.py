"""The generated HAProxy configuration (pipeline/load_balancer.py): accepted by Debian's haproxy,
and node specifications refused with a clear message. Routing itself is tested in test_multinode.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pipeline.load_balancer import COOKIE, Node, haproxy_config, main, parse_node


def test_node_spec_parses_with_a_default_health_port():
    assert parse_node("a=10.0.0.1:8501") == Node("a", "10.0.0.1", 8501, 8502)
    assert parse_node("node-2=app2:8501/9000") == Node("node-2", "app2", 8501, 9000)
    for bad in ("10.0.0.1:8501", "a=10.0.0.1", "a b=h:1", "a=h:port", "=h:1"):
        with pytest.raises(ValueError, match="name=host:port"):
            parse_node(bad)


def test_names_must_differ_and_one_node_is_needed():
    with pytest.raises(ValueError, match="differ"):
        haproxy_config([Node("a", "h", 1, 2), Node("a", "h", 3, 4)], "127.0.0.1:80")
    with pytest.raises(ValueError, match="at least one"):
        haproxy_config([], "127.0.0.1:80")
    assert main(["--node", "bad"]) == 2


def test_config_is_valid_for_haproxy(tmp_path):
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is installed by scripts/setup.sh (make test)"
    cfg = haproxy_config([parse_node("a=127.0.0.1:18501"), parse_node("b=127.0.0.1:18503/18600")],
                         "127.0.0.1:18080", stats_socket=str(tmp_path / "admin.sock"))
    assert f"cookie {COOKIE} insert" in cfg and "http-check disable-on-404" in cfg
    assert "server b 127.0.0.1:18503 cookie b check port 18600" in cfg
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    out = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
