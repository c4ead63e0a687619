"""The pod's nginx as the chart lays it out, started for real: each of the
nginx container's volumeMounts filled from the rendered ConfigMap (or empty,
for an emptyDir) and mounted at its path, docker.conf filled in by the same
envsubst step as compose-test's stand-in image, with the container's own
environment, in a mount, network and PID namespace of its own (the pod's
loopback; everything ends with it). What differs from a pod: Debian's nginx
1.22 for the image's 1.27, root instead of uid 101, and a stand-in app
on 127.0.0.1:8000 answering as the app does for a public read."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.chart.conftest import DEFAULTS, manifests
from tests.support import ROOT

STANDIN = ROOT / "scripts/compose-test/nginx"

# Answers every GET with what L1 may keep (cache/l1.py's CACHEABLE) and, as
# its body, the X-Forwarded-For nginx sent: the client's address as nginx saw it.
APP = f"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
sys.path.insert(0, {str(ROOT)!r})
from cache.l1 import CACHEABLE
class App(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"client": self.headers.get("X-Forwarded-For")}}).encode()
        self.send_response(200)
        self.send_header(*CACHEABLE)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", 8000), App).serve_forever()
"""

# Inside the namespaces: mount the pod's layout, fill in the templates, start
# the app and nginx, ask. ROOTFS holds each mount's contents under its path.
SCRIPT = r"""
set -eu
ip link set lo up
cp -a /etc/nginx/mime.types "$ROOTFS/etc/nginx/"
mount --bind "$ROOTFS/etc/nginx" /etc/nginx
mount -t tmpfs tmpfs /var/cache && mkdir -p /var/cache/nginx
mkdir -p /var/log/nginx && mount -t tmpfs tmpfs /var/log/nginx && mkdir /var/log/nginx/l1
ln -s /dev/stderr /var/log/nginx/error.log && ln -s /dev/null /var/log/nginx/access.log
"$PYTHON" -c "$APP" &
sh "$STANDIN/20-envsubst-on-templates.sh" >/dev/null
nginx -t -q
nginx
for _ in $(seq 50); do curl -s -o /dev/null 127.0.0.1:8000/ && break; sleep 0.1; done
echo "live $(curl -s 127.0.0.1:8081/_l1/live)"
echo "workers $(pgrep -c -f '^nginx: worker process')"
echo "first $(curl -s -o /dev/null -w '%{http_code}' -D - 127.0.0.1:8080/users/1 | grep -i '^x-cache-status' | tr -d '\r')"
echo "again $(curl -s -D - -o /dev/null 127.0.0.1:8080/users/1 | grep -i '^x-cache-status' | tr -d '\r')"
echo "client $(curl -s -H 'X-Forwarded-For: 198.51.100.7' 127.0.0.1:8080/users/2)"
nginx -s quit
"""


def lay_out(objects, rootfs):
    """Each volumeMount of the nginx container, under rootfs at its path; its environment."""
    spec = objects[("Deployment", "rel-api-app")]["spec"]["template"]["spec"]
    (nginx,) = [c for c in spec["containers"] if c["name"] == "nginx"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    data = objects[("ConfigMap", "rel-api-nginx")]["data"]
    for mount in nginx["volumeMounts"]:
        target = rootfs / mount["mountPath"].lstrip("/")
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for item in volume["configMap"]["items"]:
                if mount.get("subPath") in (None, item["path"]):
                    path = target if mount.get("subPath") else target / item["path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(data[item["key"]])
        else:
            target.mkdir(parents=True, exist_ok=True)
    return {var["name"]: var["value"] for var in nginx["env"]}


def start_the_pods_nginx(objects, tmp_path):
    if os.geteuid() != 0 or not shutil.which("nginx") or not shutil.which("unshare"):
        pytest.fail("needs root (namespaces) and nginx: run as make chart-test does, after scripts/install-deps.sh")
    rootfs = tmp_path / "rootfs"
    env = lay_out(objects, rootfs)
    env.update(PATH=os.environ["PATH"], ROOTFS=str(rootfs), APP=APP, PYTHON=sys.executable, STANDIN=str(STANDIN))
    run = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", SCRIPT],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    # nginx's access log goes to the same stdout, a JSON line per request.
    return dict(line.split(" ", 1) for line in run.stdout.splitlines() if not line.startswith("{"))


def test_the_pods_nginx_starts_answers_itself_and_caches(tmp_path):
    said = start_the_pods_nginx(manifests(), tmp_path)
    assert json.loads(said["live"]) == {"status": "alive"}
    assert said["first"].lower().endswith("miss") and said["again"].lower().endswith("hit")
    # No trusted proxy by default: a client's X-Forwarded-For is not believed.
    assert json.loads(said["client"]) == {"client": "127.0.0.1"}
    assert said["workers"] == "1"  # nginx.workerProcesses, not the machine's CPUs


def test_behind_a_trusted_proxy_nginx_counts_the_proxys_client(tmp_path):
    said = start_the_pods_nginx(manifests(DEFAULTS, "nginx.realIpFrom={127.0.0.0/8}", "nginx.workerProcesses=3"),
                                tmp_path)
    assert json.loads(said["client"]) == {"client": "198.51.100.7"}
    assert said["workers"] == "3"
