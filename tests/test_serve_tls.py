"""HTTPS on the LAN: the app serves TLS with a certificate the plant gives it, the `openai` client connects through
it, plain HTTP gets no answer, and a LAN address with a login but no TLS starts with a warning."""
import http.client
import shutil
import ssl
import subprocess

import pytest

from edgedistill import UserError
from edgedistill.config import ServeConfig
from edgedistill.serve.process import free_port
from edgedistill.serve.server import check_tls, serve

from tests.test_serve_api import ScriptModel, serve_in_thread

USER, PASSWORD = "ann", "s3cret"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made as docs/serve.md shows."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (Debian: apt install openssl) to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "plant.crt", folder / "plant.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def https_port(certificate, tmp_path_factory):
    cert, key = certificate
    settings = ServeConfig(port=free_port(), samples=2, tls_cert=str(cert), tls_key=str(key),
                           feedback=str(tmp_path_factory.mktemp("tls-app") / "feedback.jsonl"))
    return serve_in_thread(settings, ScriptModel(), [(USER, PASSWORD)])


def test_the_openai_client_connects_over_tls(https_port, certificate):
    import httpx
    from openai import OpenAI
    trusted = ssl.create_default_context(cafile=str(certificate[0]))       # the plant's certificate, trusted
    client = OpenAI(base_url=f"https://127.0.0.1:{https_port}/v1", api_key=f"{USER}:{PASSWORD}", max_retries=0,
                    timeout=60, http_client=httpx.Client(verify=trusted))
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "How many?"}])
    assert reply.choices[0].message.content.startswith("Answer: 360")


def test_plain_http_gets_no_answer(https_port):
    connection = http.client.HTTPConnection("127.0.0.1", https_port, timeout=30)
    with pytest.raises((http.client.HTTPException, OSError)):
        connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {USER}:{PASSWORD}"})
        connection.getresponse().read()


def test_an_unverified_client_is_refused(https_port):
    """The certificate is what proves the server is the plant's: a client that does not trust it stops."""
    import httpx
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{https_port}/v1/models", timeout=30)


def test_tls_settings_are_checked_before_the_model_loads(certificate, tmp_path):
    cert, key = certificate
    with pytest.raises(UserError, match="both --tls-cert and --tls-key"):
        check_tls(ServeConfig(tls_cert=str(cert)))
    with pytest.raises(UserError, match="no such file"):
        check_tls(ServeConfig(tls_cert=str(cert), tls_key=str(tmp_path / "missing.key")))
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(UserError, match="PEM certificate and its private key"):
        check_tls(ServeConfig(tls_cert=str(cert), tls_key=str(tmp_path / "bad.key")))
    assert check_tls(ServeConfig(tls_cert=str(cert), tls_key=str(key))) and not check_tls(ServeConfig())


def test_a_lan_address_with_a_login_but_no_tls_starts_with_a_warning(tmp_path, capsys):
    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        raise Loaded

    settings = ServeConfig(host="0.0.0.0", port=free_port(), feedback=str(tmp_path / "f.jsonl"))
    with pytest.raises(Loaded):
        serve("m", settings, [(USER, PASSWORD)], load=load)
    warned = capsys.readouterr().err
    assert "WARNING" in warned and "clear text" in warned and "--tls-cert" in warned
    with pytest.raises(Loaded):       # on loopback, no warning
        serve("m", ServeConfig(port=free_port(), feedback=str(tmp_path / "f.jsonl")), load=load)
    assert "WARNING" not in capsys.readouterr().err
