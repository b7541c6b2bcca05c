"""A small pytest suite against the demo shop's gateway, run with pytest-opentelemetry."""

import os

import requests

GATEWAY = os.environ["SHOP_GATEWAY"]


def test_browse_products():
    response = requests.get(f"{GATEWAY}/api/products", timeout=5)
    assert response.status_code == 200


def test_login_with_a_bad_password_is_refused():
    response = requests.post(
        f"{GATEWAY}/api/login",
        json={"email": "nobody@example.com", "password": "wrong"},
        timeout=5,
    )
    # Deliberately wrong: the gateway answers 401, so this test fails.
    assert response.status_code == 200
