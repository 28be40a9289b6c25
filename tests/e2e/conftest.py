# The netns fixtures live in netns/fixtures.py (a pytest plugin). pytest refuses
# `pytest_plugins` in a conftest below the rootdir, so import the fixtures instead.
import shutil
import subprocess

import pytest

from netns.fixtures import topology  # noqa: F401


@pytest.fixture(scope="session")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost, made with the
    openssl command: (cert path, key path)."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")
