"""The command line: check-config, --help, --version, a bad config at start-up, sandbox status."""

import re
import subprocess

import pytest

from conftest import CAUSEWAY_BIN, REPO, run_causeway

VALID_BACKEND = '[[backends]]\nname = "primary"\nhost = "127.0.0.1"\n'

BAD_CONFIGS = {
    "unknown key": ('[proxy]\nlisten = "127.0.0.1:6432"\ncolour = "blue"\n\n' + VALID_BACKEND, 3, "proxy.colour"),
    "bad enum value": ('[proxy]\n\npool_mode = "sideways"\n' + VALID_BACKEND, 3, "proxy.pool_mode"),
    "wrong type": ('[proxy]\nmax_client_conn = "many"\n' + VALID_BACKEND, 2, "proxy.max_client_conn"),
    "bad port": (VALID_BACKEND + "port = 70000\n", 4, "port"),
    "duplicate backend": (VALID_BACKEND + "\n" + VALID_BACKEND, 6, "backends[1].name"),
    "unknown table": (VALID_BACKEND + "\n[routeing]\nconsistency = \"session\"\n", 5, "routeing"),
    "syntax error": ('[proxy]\nlisten = \n' + VALID_BACKEND, 2, "proxy.listen"),
    "bad listen address": ('[proxy]\nlisten = "nowhere"\n' + VALID_BACKEND, 2, "proxy.listen"),
}


@pytest.mark.parametrize("text,line,key", list(BAD_CONFIGS.values()), ids=list(BAD_CONFIGS))
def test_check_config_names_file_line_and_key(tmp_path, text, line, key):
    path = tmp_path / "causeway.toml"
    path.write_text(text)
    result = run_causeway("check-config", str(path))
    assert result.returncode == 1, result
    assert f"{path}:{line}" in result.stderr, result.stderr
    assert key in result.stderr, result.stderr
    assert "OK" not in result.stdout


def test_check_config_without_backends(tmp_path):
    path = tmp_path / "causeway.toml"
    path.write_text('[proxy]\nlisten = "127.0.0.1:6432"\n')
    result = run_causeway("check-config", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr and "backends" in result.stderr


def test_check_config_on_a_missing_file(tmp_path):
    result = run_causeway("check-config", str(tmp_path / "missing.toml"))
    assert result.returncode == 1
    assert "missing.toml" in result.stderr


def test_check_config_never_prints_passwords(tmp_path):
    path = tmp_path / "causeway.toml"
    path.write_text(VALID_BACKEND + '\n[[users]]\nname = "app"\npassword = "hunter2-secret"\nbogus = 1\n')
    result = run_causeway("check-config", str(path))
    assert result.returncode == 1
    assert f"{path}:8" in result.stderr and "bogus" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_check_config_accepts_the_example_and_the_sandbox_configs(cluster):
    for path in [REPO / "conf" / "causeway.toml", cluster.config_path]:
        result = run_causeway("check-config", str(path))
        assert result.returncode == 0, result.stderr
        assert f"{path}: OK" in result.stdout
    assert "secret" not in run_causeway("check-config", str(cluster.config_path)).stdout


def test_starting_with_a_bad_config_fails_with_the_location(tmp_path):
    path = tmp_path / "causeway.toml"
    path.write_text('[proxy]\nlisten = "127.0.0.1:6432"\ncolour = "blue"\n' + VALID_BACKEND)
    result = subprocess.run([CAUSEWAY_BIN, "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert f"{path}:3" in result.stderr and "proxy.colour" in result.stderr


def test_help():
    result = run_causeway("--help")
    assert result.returncode == 0
    for word in ["--config", "--shutdown-timeout", "check-config", "sandbox", "SIGTERM", "SIGINT"]:
        assert word in result.stdout, word
    sandbox = run_causeway("sandbox", "--help")
    assert sandbox.returncode == 0
    for word in ["up", "status", "down"]:
        assert re.search(rf"\b{word}\b", sandbox.stdout), word


def test_version():
    result = run_causeway("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_unknown_option_is_a_usage_error():
    result = run_causeway("--no-such-option")
    assert result.returncode != 0
    assert "--no-such-option" in result.stderr


def test_sandbox_status_reports_the_running_cluster(cluster):
    result = run_causeway("sandbox", "status", "--dir", str(cluster.dir))
    assert result.returncode == 0, result.stderr
    for port in cluster.server_ports:
        assert str(port) in result.stdout
