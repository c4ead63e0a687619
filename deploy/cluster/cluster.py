"""The product on several hosts of this one machine: each host a network
namespace with an address of its own on a bridge, behind one entry.

    entry      nginx in the machine's own namespace, on 127.0.0.1:PORT; load-balances over the app hosts
    app1..N    nginx (its own L1) and gunicorn each, as `make up` runs them (scripts/stack.sh)
    ops        the relay, the Celery worker (with beat) and the migrations
    pg1, pg2   PostgreSQL under Patroni, and an etcd member each     } the data tier,
    redis1, 2  the cache and the state Redis, and a sentinel each    } deploy/cluster/datatier.py
    witness    the third etcd member and the third sentinel          }

The app hosts and ops run the project's own processes with scripts/stack.sh,
inside their namespace, from a directory of their own, with their own
stack.env: the same code, nginx configuration and settings as `make up`;
only the addresses differ. The relay finds every L1 by one name,
``l1.<cluster>``, that the ops host's hosts file resolves to every app host,
looked up again every second (cache/l1.py): ``add`` makes a new host known
to it without a restart.

    python deploy/cluster/cluster.py up [--apps N] [--port PORT]
    python deploy/cluster/cluster.py status            JSON: every host, its role, address, whether it is up,
                                                       which PostgreSQL leads and which Redis is primary
    python deploy/cluster/cluster.py kill HOST [SERVICE]   SIGKILL every process on HOST (or one data-tier
                                                       service of it: redis-cache, redis-state, sentinel, patroni, etcd)
    python deploy/cluster/cluster.py stop HOST         graceful: an app host leaves the entry first
    python deploy/cluster/cluster.py start HOST
    python deploy/cluster/cluster.py partition HOST [PEER]   cut every link of HOST, or only towards PEER
                                                       (a host, ``entry``, or ``data``: every host but the app hosts)
    python deploy/cluster/cluster.py heal HOST [PEER]
    python deploy/cluster/cluster.py reinit HOST       a PostgreSQL node copied anew from the leader
    python deploy/cluster/cluster.py add               a new app host, known to the entry and the relay
    python deploy/cluster/cluster.py balance round-robin|hash   how the entry spreads requests
    python deploy/cluster/cluster.py down              end every process, remove every namespace, link and bridge

The cluster lives in CLUSTER_DIR (default .cluster/ in the checkout); ``down``
deletes it. Root is needed (namespaces, links). Traffic goes only to loopback
and to the cluster's own addresses, on a /24 checked to be unused.
"""

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import signal
import sys
import urllib.request
from pathlib import Path

import datatier
from datatier import DataTier, pid_alive, process_running, run

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack.sh"
# Candidate networks, the first one unused on this machine is taken.
CANDIDATES = ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=24)
APP_PORT, REFRESH_PORT = 80, 8081
OPS_SERVICES = ("migrate", "relay", "worker")
APP_SERVICES = ("app", "nginx")
# The hosts that are not app hosts, with the last byte of their address (app hosts from 10 on).
OPS_HOST = ("ops", 2)
DATA_HOSTS = {"redis1": ("redis", 3), "redis2": ("redis", 4), "pg1": ("postgres", 5), "pg2": ("postgres", 6),
              "witness": ("witness", 7)}


class Cluster:
    def __init__(self, directory):
        self.dir = Path(directory).resolve()
        self.state_file = self.dir / "cluster.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    # -- state -------------------------------------------------------------

    def save(self):
        self.state_file.write_text(json.dumps(self.state, indent=2) + "\n")

    @property
    def hosts(self):
        return self.state["hosts"]

    def host(self, name):
        if name not in self.hosts:
            sys.exit(f"no host {name!r}: {', '.join(self.hosts)}")
        return self.hosts[name]

    def apps(self):
        return [name for name, host in self.hosts.items() if host["role"] == "app"]

    def address(self, name):
        """A host's address; ``entry`` is the machine's own on the bridge."""
        return self.state["entry_address"] if name == "entry" else self.host(name)["address"]

    def addresses(self, peer):
        """The addresses a partition towards ``peer`` cuts: ``data`` is every host but the app hosts."""
        if peer == "data":
            return [host["address"] for host in self.hosts.values() if host["role"] != "app"]
        return [self.address(peer)]

    @property
    def data_tier(self):
        hosts = {name: host for name, host in self.hosts.items() if name in DATA_HOSTS}
        return DataTier(self.state["name"], self.state["subnet"], hosts, self.dir / "secrets.json")

    @property
    def l1_name(self):
        return f"l1.{self.state['name']}"

    # -- up and down ---------------------------------------------------------

    def up(self, apps, port):
        if self.state:
            sys.exit(f"a cluster runs in {self.dir}: down first")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the postgres user reaches its data directory
        name = f"apic{secrets.token_hex(2)}"
        while (run("ip", "link", "show", name, check=False).returncode == 0
               or namespace_exists(f"{name}-net")):  # another cluster's
            name = f"apic{secrets.token_hex(2)}"
        subnet = unused_subnet()
        addresses = list(subnet.hosts())
        self.state = {
            "name": name, "subnet": str(subnet), "bridge": name, "bridge_ns": f"{name}-net", "port": port,
            "entry_address": str(addresses[0]), "secret_key": secrets.token_hex(32),
            "next_address": 10, "hosts": {},
        }
        self.save()
        # The bridge in a namespace of its own: traffic between hosts never
        # meets the machine's firewall, where a Docker engine's FORWARD policy
        # drops bridged packets once br_netfilter is loaded (and an engine
        # may start, or rewrite its rules, at any time after up). The machine
        # reaches the hosts through one link into it, with the entry's address.
        self.state["bridge_made"] = True
        self.save()
        bridge_ns = ("ip", "-n", self.state["bridge_ns"])
        run("ip", "netns", "add", self.state["bridge_ns"])
        run(*bridge_ns, "link", "add", name, "type", "bridge")
        run(*bridge_ns, "link", "set", name, "up")
        run("ip", "link", "add", name, "type", "veth", "peer", "name", "uplink", "netns", self.state["bridge_ns"])
        run(*bridge_ns, "link", "set", "uplink", "master", name, "up")
        run("ip", "addr", "add", f"{addresses[0]}/{subnet.prefixlen}", "dev", name)
        run("ip", "link", "set", name, "up")
        for name, (role, last) in DATA_HOSTS.items():
            self._make_host(name, role, str(subnet.network_address + last))
        self.data_tier.up()
        self._make_host(OPS_HOST[0], "ops", str(subnet.network_address + OPS_HOST[1]))
        self.start(OPS_HOST[0])
        for _ in range(apps):
            self.add(entry=False)
        self._write_entry()
        self._start_entry()
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 30, "the entry")
        print(f"the cluster answers on http://127.0.0.1:{port} ({len(self.apps())} app hosts; "
              f"python deploy/cluster/cluster.py status)", file=sys.stderr)

    def down(self):
        """Every step tried, whatever an earlier one did; what failed is said at the end."""
        if not self.state:
            return
        failed = []

        def attempt(what, step, *args):
            try:
                step(*args)
            except (Exception, SystemExit) as error:  # noqa: BLE001 (the next step must still run)
                failed.append(f"{what}: {error}")

        attempt("the entry", self._stop_entry)
        for name in list(self.hosts):
            host = self.hosts[name]
            if namespace_exists(host["ns"]):
                if name not in DATA_HOSTS:
                    attempt(f"{name}'s services", self._stack, name, "reset")
                attempt(f"{name}'s processes", self._kill_all, name)
                run("ip", "netns", "del", host["ns"], check=False)
            run("ip", "-n", self.state["bridge_ns"], "link", "del", host["veth"], check=False)
            shutil.rmtree(Path("/etc/netns") / host["ns"], ignore_errors=True)
        if self.state.get("bridge_made"):
            run("ip", "link", "del", self.state["bridge"], check=False)  # the uplink, and its end in the bridge's namespace
            run("ip", "netns", "del", self.state["bridge_ns"], check=False)  # the bridge, and what is left on it
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state = None
        if failed:
            sys.exit("down left behind: " + "; ".join(failed))

    def add(self, entry=True):
        """A new app host, started, known to the relay's hosts file and the entry."""
        number = 1 + sum(1 for host in self.hosts.values() if host["role"] == "app")
        name = f"app{number}"
        subnet = ipaddress.ip_network(self.state["subnet"])
        address = str(subnet.network_address + self.state["next_address"])
        self.state["next_address"] += 1
        self._make_host(name, "app", address)
        self._write_l1_names()
        self.start(name, entry=entry)
        return name

    def _make_host(self, name, role, address):
        # An interface name has at most 15 characters: the cluster's 8, a dash, 6.
        ns, veth = f"{self.state['name']}-{name}", f"{self.state['name']}-{name.removeprefix('app')[:6]}"
        directory = self.dir / "hosts" / name
        # Recorded first, so that down removes whatever the steps below made.
        self.hosts[name] = {"role": role, "ns": ns, "veth": veth, "address": address, "dir": str(directory),
                            "cut_from": []}
        self.save()
        run("ip", "netns", "add", ns)
        bridge_ns = ("ip", "-n", self.state["bridge_ns"])
        run(*bridge_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run(*bridge_ns, "link", "set", veth, "master", self.state["bridge"], "up")
        prefix = ipaddress.ip_network(self.state["subnet"]).prefixlen
        run("ip", "-n", ns, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        # `ip netns exec` shows a namespace's processes /etc/netns/NS/hosts as /etc/hosts.
        (Path("/etc/netns") / ns).mkdir(parents=True, exist_ok=True)
        (Path("/etc/netns") / ns / "hosts").write_text("127.0.0.1 localhost\n")
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)

    def _write_env(self, name):
        """The host's stack.env: the settings of `make up`, with the data tier's addresses."""
        host, data = self.host(name), self.data_tier
        directory = Path(host["dir"])
        lines = {
            "APP_ENV": "development",
            "SECRET_KEY": self.state["secret_key"],
            # The first node that takes writes, straight (the relay's advisory
            # lock and startup options need a session of their own: no pooler).
            "DATABASE_URL": data.database_url("api"),
            "MIGRATE_DATABASE_URL": data.database_url("app"),
            # Every Redis client asks the sentinels where the primary is, and again after a failover.
            "REDIS_URL": data.sentinel_url("cache", 0),
            "RATE_LIMIT_STORAGE_URL": data.sentinel_url("state", 0),
            "QUEUE_REDIS_URL": data.sentinel_url("state", 1),
            "WEB_BIND": f"unix:{directory}/app/app.sock",
            "L1_REFRESH_URLS": f"http://{self.l1_name}:{REFRESH_PORT}",
            # Each host's own loopback: the same ports on every host never collide.
            "APP_METRICS_BIND": "127.0.0.1:9101", "RELAY_METRICS_BIND": "127.0.0.1:9102",
            "WORKER_METRICS_BIND": "127.0.0.1:9103", "L1_METRICS_BIND": "127.0.0.1:3903",
            "PROMETHEUS_BIND": "127.0.0.1:9090",
        }
        env = directory / "stack.env"
        env.write_text("".join(f"{key}='{value}'\n" for key, value in lines.items()))
        env.chmod(0o600)

    def _write_l1_names(self):
        """The ops host's hosts file: ``l1.<cluster>`` is every app host. Written
        in place: the relay's namespace sees this very file."""
        lines = ["127.0.0.1 localhost"] + [f"{self.address(app)} {self.l1_name}" for app in self.apps()]
        path = Path("/etc/netns") / self.host(OPS_HOST[0])["ns"] / "hosts"
        with open(path, "r+") as hosts:
            hosts.truncate(0)
            hosts.write("\n".join(lines) + "\n")

    # -- one host --------------------------------------------------------------

    def _stack(self, name, *args, check=True, **env):
        host = self.host(name)
        settings = {"STACK_DIR": host["dir"], "PORT": str(APP_PORT), "LISTEN_HOST": host["address"], **env}
        return run("ip", "netns", "exec", host["ns"], "env", *(f"{k}={v}" for k, v in settings.items()),
                   str(STACK), *args, check=check)

    def start(self, name, entry=True):
        host = self.host(name)
        if name in DATA_HOSTS:
            self.data_tier.start(name)
            host["stopped"] = False
            self.save()
            return
        self._write_env(name)
        if host["role"] == "app":
            self._write_app_nginx_extras(name)
        for service in OPS_SERVICES if host["role"] == "ops" else APP_SERVICES:
            result = self._stack(name, "start", service, check=False)
            if result.returncode != 0:
                sys.exit(f"{name}: {service} did not start:\n{result.stderr}")
        host["stopped"] = False
        self.save()
        if host["role"] == "app" and entry and self._write_entry():
            self._reload_entry()

    def _write_app_nginx_extras(self, name):
        """What an app host's nginx adds to the local stack's: the client address
        from the entry's X-Forwarded-For (the entry's alone), and the relay's
        way in on TCP (nginx/local.conf.template has it on a unix socket)."""
        host = self.host(name)
        extra = Path(host["dir"]) / "nginx" / "extra"
        extra.mkdir(parents=True, exist_ok=True)
        (extra / "server-client-address.conf").write_text(
            f"set_real_ip_from {self.state['entry_address']};\nreal_ip_header X-Forwarded-For;\n")
        (extra / "http-refresh-server.conf").write_text(
            f"server {{\n    listen {host['address']}:{REFRESH_PORT};\n"
            f"    # The relay's alone.\n    allow {self.address(OPS_HOST[0])};\n    deny all;\n"
            f"    include {ROOT}/nginx/cache.conf;\n    include {ROOT}/nginx/peek.conf;\n"
            f"    include {ROOT}/nginx/errors.conf;\n}}\n")

    def stop(self, name):
        """Gracefully: an app host first leaves the entry, and what it serves ends."""
        host = self.host(name)
        host["stopped"] = True  # out of the entry until started, whatever rewrites it meanwhile
        self.save()
        if host["role"] == "app" and self._write_entry():
            self._reload_entry()
        if name in DATA_HOSTS:
            self.data_tier.stop(name)
        else:
            self._stack(name, "down", check=False)

    def kill(self, name, service=None):
        if service is None:
            self._kill_all(name)
        elif name in DATA_HOSTS:
            self.data_tier.kill(name, service)
        else:
            sys.exit(f"{name}: only a data-tier host's services are killed one by one")

    def _kill_all(self, name):
        """SIGKILL every process of the host's namespace; returns once none is left."""
        ns = self.host(name)["ns"]

        def pids():
            return [int(pid) for pid in run("ip", "netns", "pids", ns, check=False).stdout.split()]

        # All at once, as when a machine dies: stopped first, so that none
        # (nginx, say) answers for another that is already gone.
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        wait_for(lambda: not [pid for pid in pids() if process_running(pid)], 10, f"{name}'s processes to end")

    def partition(self, name, peer=None):
        host = self.host(name)
        if peer is None:
            run("ip", "-n", self.state["bridge_ns"], "link", "set", host["veth"], "down")
            host["cut_from"].append("*")
        else:
            for address in self.addresses(peer):
                for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
                    run("ip", "netns", "exec", host["ns"], "iptables", "-I", chain, side, address, "-j", "DROP")
            host["cut_from"].append(peer)
        self.save()

    def heal(self, name, peer=None):
        host = self.host(name)
        if peer is None:
            run("ip", "-n", self.state["bridge_ns"], "link", "set", host["veth"], "master", self.state["bridge"], "up")
            for cut in [p for p in host["cut_from"] if p != "*"]:
                self.heal(name, cut)
            host["cut_from"] = []
        elif peer in host["cut_from"]:
            for address in self.addresses(peer):
                for chain, side in (("INPUT", "-s"), ("OUTPUT", "-d")):
                    run("ip", "netns", "exec", host["ns"], "iptables", "-D", chain, side, address, "-j", "DROP")
            host["cut_from"].remove(peer)
        self.save()

    def balance(self, how):
        """How the entry spreads requests: ``round-robin`` (each host's L1 may
        hold any item) or ``hash`` (each URI to one host, by consistent hashing)."""
        self.state["balance"] = how
        self.save()
        if self._write_entry():
            self._reload_entry()

    def status(self):
        """Every host and its processes; for the data tier also what it leads,
        as Patroni and the sentinels say."""
        data = self.data_tier
        hosts = [{"name": "entry", "role": "entry", "address": f"127.0.0.1:{self.state['port']}",
                  "bridge_address": self.state["entry_address"],
                  "up": pid_alive(self.dir / "entry" / "nginx.pid"), "processes": {}}]
        for name, host in self.hosts.items():
            if name in DATA_HOSTS:
                processes = data.services(name) if namespace_exists(host["ns"]) else {}
                leads = data.roles(name)
            else:
                processes, leads = {}, {}
                if namespace_exists(host["ns"]):
                    for line in self._stack(name, "status", check=False).stdout.splitlines():
                        service, _, state = line.partition(": ")
                        processes[service] = state == "running"
                wanted = ("nginx", "gunicorn") if host["role"] == "app" else ("relay", "celery")
                processes = {service: processes.get(service, False) for service in wanted}
            hosts.append({"name": name, "role": host["role"], "address": host["address"], "namespace": host["ns"],
                          "up": bool(processes) and all(processes.values()), "cut_from": host["cut_from"],
                          "processes": processes, **leads})
        primaries = {}
        for role in ("cache", "state"):
            primary = data.redis_primary(role)
            primaries[role] = next((name for name in DataTier.REDIS_HOSTS
                                    if primary and self.address(name) == primary[0]), None)
        return {"name": self.state["name"], "subnet": self.state["subnet"],
                "balance": self.state.get("balance", "round-robin"),
                "entry": f"http://127.0.0.1:{self.state['port']}",
                "data_tier": {"postgres_leader": data.pg_leader(), "postgres_whole": data.pg_whole(),
                              "redis_primaries": primaries, "redis_whole": data.redis_whole(),
                              "etcd_leader_changes": data.etcd_leader_changes(),
                              "database_url": data.database_url("app")},
                "hosts": hosts}

    # -- the entry ---------------------------------------------------------------

    def _write_entry(self):
        """The entry's configuration, with every app host not stopped;
        whether it changed. A reload closes the entry's idle client
        connections, and a client that sent on one at that moment has to
        send again: the entry reloads only when its hosts change."""
        directory = self.dir / "entry"
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        servers = "".join(f"        server {self.address(app)}:{APP_PORT} max_fails=1 fail_timeout=2s;\n"
                          for app in self.apps() if not self.host(app).get("stopped"))
        if self.state.get("balance") == "hash":  # each URI to one host: one L1 copy of each item
            servers += "        hash $request_uri consistent;\n"
        template = (Path(__file__).parent / "entry.conf.template").read_text()
        config = (template.replace("@STATE@", str(directory)).replace("@ROOT@", str(ROOT))
                  .replace("@SERVERS@", servers.rstrip("\n").lstrip()).replace("@PORT@", str(self.state["port"])))
        path = directory / "nginx.conf"
        if path.exists() and path.read_text() == config:
            return False
        path.write_text(config)
        return True

    def _start_entry(self):
        directory = self.dir / "entry"
        run("nginx", "-q", "-e", f"{directory}/error.log", "-p", str(directory), "-c", f"{directory}/nginx.conf")

    def _reload_entry(self):
        """Reload the entry; returns once its old workers, and the requests
        they were passing on, are done."""
        directory = self.dir / "entry"
        if not pid_alive(directory / "nginx.pid"):
            return
        master = int((directory / "nginx.pid").read_text())
        old = children(master)
        run("nginx", "-q", "-e", f"{directory}/error.log", "-p", str(directory), "-c", f"{directory}/nginx.conf",
            "-s", "reload")
        wait_for(lambda: children(master) and not (children(master) & old), 60, "the entry's old workers to finish")

    def _stop_entry(self):
        pidfile = self.dir / "entry" / "nginx.pid"
        if pid_alive(pidfile):
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not process_running(pid), 10, "the entry to stop")


def unused_subnet():
    """The first candidate /24 that no address or route of this machine overlaps."""
    taken = []
    for line in run("ip", "-4", "-o", "addr").stdout.splitlines() + run("ip", "-4", "route").stdout.splitlines():
        for word in line.split():
            try:
                taken.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
    for candidate in CANDIDATES:
        if not any(candidate.overlaps(network) for network in taken if network.prefixlen > 0):
            return candidate
    sys.exit("no unused /24 in 10.213.0.0/16")


def namespace_exists(ns):
    return Path("/run/netns", ns).exists()


def children(pid):
    """The running processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(condition, seconds, what):
    """datatier's, ending the command with its message instead of a traceback."""
    try:
        datatier.wait_for(condition, seconds, what)
    except TimeoutError as error:
        sys.exit(str(error))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=os.environ.get("CLUSTER_DIR", ROOT / ".cluster"))
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up")
    up.add_argument("--apps", type=int, default=3)
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT", 80)))
    for verb in ("kill", "stop", "start"):
        verbs.add_parser(verb).add_argument("host")
    verbs.choices["kill"].add_argument("service", nargs="?", help="only this service of a data-tier host")
    for verb in ("partition", "heal"):
        one = verbs.add_parser(verb)
        one.add_argument("host")
        one.add_argument("peer", nargs="?", help="only towards this host (or entry)")
    for verb in ("status", "add", "down"):
        verbs.add_parser(verb)
    verbs.add_parser("reinit").add_argument("host", choices=DataTier.PG_HOSTS)
    verbs.add_parser("balance").add_argument("how", choices=("round-robin", "hash"))
    args = parser.parse_args()
    cluster = Cluster(args.dir)
    if args.verb == "up":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit("up: terminated"))
        try:
            cluster.up(args.apps, args.port)
        except BaseException:
            cluster.down()
            raise
        return
    if cluster.state is None:
        if args.verb == "down":
            return
        sys.exit(f"no cluster in {cluster.dir}: up first")
    if args.verb == "status":
        print(json.dumps(cluster.status(), indent=2))
    elif args.verb == "add":
        print(cluster.add())
    elif args.verb == "kill":
        cluster.kill(args.host, args.service)
    elif args.verb in ("stop", "start"):
        getattr(cluster, args.verb)(args.host)
    elif args.verb in ("partition", "heal"):
        getattr(cluster, args.verb)(args.host, args.peer)
    elif args.verb == "balance":
        cluster.balance(args.how)
    elif args.verb == "reinit":
        cluster.data_tier.reinit(args.host)
    else:
        cluster.down()


if __name__ == "__main__":
    main()
