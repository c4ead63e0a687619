"""Swagger UI in a real browser (headless Chromium), through the stack's nginx, offline."""

import shutil
import subprocess
import tempfile

import pytest

# Every domain's tag and one operation of each, as Swagger UI renders them.
EXPECTED = {
    "users": "/users/{user_id}",
    "addresses": "/addr_by_phone",
    "incidents": "/incident/update-status",
    "accounts": "/api/user/token/",
    "orders": "/api/orders/{order_id}/",
    "health": "/health",
}


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("chromium is not installed: `make test` installs it (WITH_TEST_TOOLS=1 scripts/install-deps.sh)")
    return path


def render(url, *extra):
    with tempfile.TemporaryDirectory() as profile:
        # No background networking: this machine has no internet, and the
        # page must not need it.
        result = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra, url],
            capture_output=True, text=True, timeout=90,
        )
    return result


def test_swagger_ui_lists_the_operations_of_every_domain(send, base_url):
    # nginx's policy for the page: scripts and styles from the site only, none inline.
    policy = send("GET", "/docs").headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    # The browser's console reports every resource the policy blocks.
    result = render(f"{base_url}/docs", "--dump-dom", "--enable-logging=stderr", "--log-level=0")
    assert "Content Security Policy" not in result.stderr
    dom = result.stdout
    assert "swagger-ui" in dom and "opblock-tag" in dom, dom[:500]
    for tag, path in EXPECTED.items():
        assert f'data-tag="{tag}"' in dom, f"tag {tag} missing from the rendered page"
        assert f'data-path="{path}"' in dom, f"operation {path} missing from the rendered page"
