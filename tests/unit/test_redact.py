"""module_utils/redact.py: the one home of secret redaction in messages (Kubernetes and Prometheus errors)."""

import pytest
from ansible_collections.meshops.istio.plugins.module_utils import prometheus
from ansible_collections.meshops.istio.plugins.module_utils.k8s import errors
from ansible_collections.meshops.istio.plugins.module_utils.redact import first_line, redact


@pytest.mark.parametrize(
    "text, secret",
    [
        ("401 calling with Bearer abc.def.ghi and more", "abc.def.ghi"),
        ("Authorization: bearer eyJhbGciOi", "eyJhbGciOi"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("GET /api?token=s3cr3t&x=1", "s3cr3t"),
        ("{'api_key': 'k-123'}", "k-123"),
        ("password=hunter2, retrying", "hunter2"),
        ('{"refresh_token": "r-9"}', "r-9"),
        ("cannot reach https://admin:pa55@prometheus.example:9090/api/v1/query", "pa55"),
        ("cannot reach https://admin:p@ss@prometheus.example/api", "ss@prom"),
        ('Authorization: Bearer "eyJ0eXAi"', "eyJ0eXAi"),
        ("client_secret=c5; other=1", "c5"),
        ("X-Api-Key: k9k9", "k9k9"),
    ],
)
def test_credentials_in_messages_are_redacted(text, secret):
    out = redact(text)
    assert secret not in out, out
    assert "<redacted>" in out


def test_text_without_credentials_is_left_as_it_is():
    text = 'namespaces is forbidden: User "system:serviceaccount:ns:sa" cannot list resource "namespaces"'
    assert redact(text) == text
    assert redact("https://prometheus.example:9090/api") == "https://prometheus.example:9090/api"
    assert redact("https://reader@prometheus.example/api") == "https://reader@prometheus.example/api"
    assert redact("Invalid basic authentication for realm") == "Invalid basic authentication for realm"
    assert redact("GET /q?token=abc&query=up") == "GET /q?token=<redacted>&query=up"


def test_a_url_password_is_masked_in_the_modules_output_and_arguments():
    module = type("M", (), {"params": {"prometheus_url": "https://u:s3cret@prom:9090"}, "no_log_values": set()})()
    prometheus.hide_url_password(module)
    assert module.no_log_values == {"s3cret"}
    plain = type("M", (), {"params": {"prometheus_url": "https://prom:9090"}, "no_log_values": set()})()
    prometheus.hide_url_password(plain)
    assert plain.no_log_values == set()


def test_first_line_of_an_exception_is_quoted_redacted():
    assert first_line(Exception("401 Bearer abc.def\nsecond line Bearer xyz")) == "401 Bearer <redacted>"
    assert first_line(ValueError("")) == "ValueError"


def test_both_clients_use_it():
    assert errors.first_line is first_line
    assert prometheus.first_line is first_line
    where = prometheus.Prometheus({"prometheus_url": "https://u:p4ss@prom.example:9090/"}).where
    assert where == "Prometheus at https://u:<redacted>@prom.example:9090"
