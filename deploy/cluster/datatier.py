"""The cluster's data tier, highly available: PostgreSQL under Patroni with
etcd and synchronous replication, and both Redis roles under Sentinel, each
on hosts of their own. deploy/cluster/cluster.py makes the hosts; this module
writes each one's configuration, starts and stops its processes, and asks
who leads.

    pg1, pg2        an etcd member and Patroni (PostgreSQL), one the leader, the other its synchronous standby
    redis1, redis2  the cache Redis (6379) and the state Redis (6380), a primary of each role on one,
                    its replica on the other, and a sentinel (26379)
    witness         the third etcd member and the third sentinel: the quorum's tie-breaker, no data

Every process runs inside its host's namespace, listens on the host's address
and its loopback only, and keeps its files in the host's directory; the
PostgreSQL processes (Patroni, and the postgres it starts) run as the
``postgres`` user. Generated passwords stay in the cluster's directory.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

PG_PORT, PATRONI_PORT, ETCD_PORT, ETCD_PEER_PORT = 5432, 8008, 2379, 2380
SENTINEL_PORT = 26379
PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1:]
HERE = Path(__file__).resolve().parent

# Each Redis role: its port, and the settings of `make up`'s server of that
# role (scripts/stack.sh, start_redis and start_state_redis): the cache may
# lose anything and evicts; the state (limits, the queue) never evicts and is
# kept on disk.
REDIS_ROLES = {
    "cache": {"port": 6379, "settings": {"appendonly": "no", "maxmemory": "256mb",
                                         "maxmemory-policy": "allkeys-lru"}},
    "state": {"port": 6380, "settings": {"appendonly": "yes", "maxmemory": "64mb",
                                         "maxmemory-policy": "noeviction"}},
}

# Sentinel. down-after: a primary unanswered this long is down. Never shorter
# than L2's caught-up second (cache/l2.py CAUGHT_UP_SECONDS): the relay's
# last "caught up" on the old primary has then expired, so a promoted replica
# never serves a mark replicated from before the failover, and L2 stays DOWN
# there until the relay, which moves L2 to a new epoch on the new run id,
# marks it again. Twice that second, so that a load spike of a second on a
# shared 2-core machine is no failover. failover-timeout: small, so that a
# failover that stalls (its leading sentinel killed mid-way) is tried again
# within seconds, not the default three minutes.
SENTINEL_QUORUM = 2
SENTINEL_DOWN_AFTER_MS = 2000
SENTINEL_FAILOVER_TIMEOUT_MS = 6000

# etcd: heartbeat and election timeout five times their defaults, since a
# leader's heartbeat delayed past the election timeout by a busy CPU is an
# election without a failure; the election timeout stays below Patroni's
# retry_timeout, so a real etcd election ends within one Patroni retry.
# pre-vote: a member coming back from a partition with a higher term does not
# unseat a working leader.
ETCD_HEARTBEAT_MS = 500
ETCD_ELECTION_MS = 2500

# Patroni. ttl: how long the leader key lives without a refresh, which is
# how long a dead leader keeps its key (the failover's main cost); loop_wait:
# how often each node looks; retry_timeout: how long a failing etcd or
# PostgreSQL call is retried before the leader demotes itself. Patroni's rule:
# loop_wait + 2 * retry_timeout <= ttl. retry_timeout above etcd's election
# timeout (above), so that an etcd election alone never demotes the leader.
PATRONI_TTL = 12
PATRONI_LOOP_WAIT = 2
PATRONI_RETRY_TIMEOUT = 5


def run(*args, check=True, **kwargs):
    return subprocess.run(args, check=check, text=True, capture_output=True, **kwargs)


class Host:
    """One data-tier host: its name, role, namespace, address and directory."""

    def __init__(self, name, record):
        self.name, self.role, self.ns = name, record["role"], record["ns"]
        self.address, self.dir = record["address"], Path(record["dir"])

    def path(self, *parts):
        return self.dir.joinpath(*parts)


class DataTier:
    """The data tier of one cluster: ``hosts`` maps a host's name to its
    record in cluster.json; ``secrets_file`` holds the generated passwords."""

    PG_HOSTS, REDIS_HOSTS, WITNESS = ("pg1", "pg2"), ("redis1", "redis2"), "witness"
    ETCD_HOSTS = ("pg1", "pg2", "witness")
    SENTINEL_HOSTS = ("redis1", "redis2", "witness")

    def __init__(self, cluster_name, subnet, hosts, secrets_file):
        self.cluster_name, self.subnet = cluster_name, subnet
        self.hosts = {name: Host(name, record) for name, record in hosts.items()}
        self.secrets_file = Path(secrets_file)

    def address(self, name):
        return self.hosts[name].address

    # -- what the clients use --------------------------------------------------

    def database_url(self, user):
        """libpq's multi-host URL: the first of the nodes that takes writes. The
        hosts as query parameters, which libpq reads as the same list and
        which URL parsers that know one host a URL (yoyo's) pass on untouched."""
        hosts = ",".join(self.address(name) for name in self.PG_HOSTS)
        ports = ",".join(str(PG_PORT) for _ in self.PG_HOSTS)
        return f"postgresql://{user}@/app?host={hosts}&port={ports}&target_session_attrs=read-write"

    def sentinel_url(self, role, db):
        """The limits library's form, which the app's settings take."""
        nodes = ",".join(f"{self.address(name)}:{SENTINEL_PORT}" for name in self.SENTINEL_HOSTS)
        return f"redis+sentinel://{nodes}/{role}/{db}"

    # -- secrets -----------------------------------------------------------------

    def passwords(self):
        """PostgreSQL's superuser and replication passwords, made once per cluster.
        Patroni's initdb refuses an empty superuser password."""
        if not self.secrets_file.exists():
            made = {"superuser": secrets.token_urlsafe(24), "replication": secrets.token_urlsafe(24)}
            self.secrets_file.touch(mode=0o600)
            self.secrets_file.write_text(json.dumps(made) + "\n")
        return json.loads(self.secrets_file.read_text())

    # -- bringing it up ------------------------------------------------------------

    def up(self):
        """etcd first (its members wait for each other), then the PostgreSQL
        leader alone so that it bootstraps, then its standby, then Redis."""
        for name in self.ETCD_HOSTS:
            self._start_etcd(self.hosts[name], new=True)
        wait_for(self.etcd_healthy, 60, "etcd's quorum")
        self._start_patroni(self.hosts[self.PG_HOSTS[0]])
        wait_for(lambda: self.pg_leader() == self.PG_HOSTS[0], 90, "the PostgreSQL leader")
        for name in self.PG_HOSTS[1:]:
            self._start_patroni(self.hosts[name])
        wait_for(self.pg_whole, 90, "the PostgreSQL standby to stream synchronously")
        for name in self.REDIS_HOSTS:
            self._start_redis(self.hosts[name])
        for name in self.SENTINEL_HOSTS:
            self._start_sentinel(self.hosts[name])
        wait_for(self.redis_whole, 60, "Redis: a primary and a replica of each role, seen by every sentinel")

    def start(self, name):
        """A host's processes, as after a crash or a stop: it rejoins."""
        host = self.hosts[name]
        if name in self.ETCD_HOSTS:
            self._start_etcd(host, new=False)
        if name in self.PG_HOSTS:
            self._start_patroni(host)
        if name in self.REDIS_HOSTS:
            self._start_redis(host)
        if name in self.SENTINEL_HOSTS:
            self._start_sentinel(host)

    def stop(self, name):
        """Gracefully: a Patroni leader hands over (it deletes its key on the
        way out), then PostgreSQL, Redis, the sentinel and etcd end."""
        host = self.hosts[name]
        for service in ("patroni", "redis-cache", "redis-state", "sentinel", "etcd"):
            stop_pidfile(host.path(service, "pid"))

    def kill(self, name, service):
        """SIGKILL one process of a host (``redis-cache``, say), as when it alone crashes."""
        pidfile = self.hosts[name].path(service, "pid")
        if service not in self.services(name):
            raise ValueError(f"{name} runs no {service}: {', '.join(self.services(name))}")
        if pid_alive(pidfile):
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not process_running(pid), 10, f"{name}'s {service} to end")

    def services(self, name):
        """Each process the host should run: whether it runs."""
        host, wanted = self.hosts[name], []
        if name in self.ETCD_HOSTS:
            wanted.append("etcd")
        if name in self.PG_HOSTS:
            wanted.append("patroni")
        if name in self.REDIS_HOSTS:
            wanted += ["redis-cache", "redis-state"]
        if name in self.SENTINEL_HOSTS:
            wanted.append("sentinel")
        return {service: pid_alive(host.path(service, "pid")) for service in wanted}

    # -- etcd --------------------------------------------------------------------

    def _start_etcd(self, host, new):
        directory = host.path("etcd")
        directory.mkdir(parents=True, exist_ok=True)
        if pid_alive(directory / "pid"):
            return
        members = ",".join(f"{name}=http://{self.address(name)}:{ETCD_PEER_PORT}" for name in self.ETCD_HOSTS)
        argv = ["etcd", "--name", host.name, "--data-dir", str(directory / "data"),
                "--listen-client-urls", f"http://{host.address}:{ETCD_PORT},http://127.0.0.1:{ETCD_PORT}",
                "--advertise-client-urls", f"http://{host.address}:{ETCD_PORT}",
                "--listen-peer-urls", f"http://{host.address}:{ETCD_PEER_PORT}",
                "--initial-advertise-peer-urls", f"http://{host.address}:{ETCD_PEER_PORT}",
                "--initial-cluster", members, "--initial-cluster-token", self.cluster_name,
                # A member with data rejoins with it; the flag matters for an empty one only.
                "--initial-cluster-state", "new" if new else "existing",
                "--heartbeat-interval", str(ETCD_HEARTBEAT_MS), "--election-timeout", str(ETCD_ELECTION_MS),
                "--pre-vote", "--enable-v2=true",  # Patroni's etcd (v2) client: see _patroni_config
                "--logger", "zap", "--log-outputs", str(directory / "etcd.log")]
        spawn(host, argv, directory)

    def etcd_healthy(self):
        return all(http_json(f"http://{self.address(name)}:{ETCD_PORT}/health", {}).get("health") == "true"
                   for name in self.ETCD_HOSTS)

    def etcd_leader_changes(self):
        """etcd's own count of leader changes each member has seen (a Prometheus counter)."""
        counts = {}
        for name in self.ETCD_HOSTS:
            text = http_text(f"http://{self.address(name)}:{ETCD_PORT}/metrics")
            for line in (text or "").splitlines():
                if line.startswith("etcd_server_leader_changes_seen_total "):
                    counts[name] = int(float(line.split()[1]))
        return counts

    # -- PostgreSQL under Patroni ------------------------------------------------------

    def _patroni_config(self, host):
        pg = host.path("pg")
        passwords = self.passwords()
        return {
            "scope": self.cluster_name, "namespace": "/service/", "name": host.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"{host.address}:{PATRONI_PORT}",
                        "connect_address": f"{host.address}:{PATRONI_PORT}"},
            # etcd's v2 API, not v3: Patroni 3.0.2's etcd3 refreshes the leader key
            # with an unconditional put whenever its lease changed, so an old
            # primary back from a partition, still believing its cached view,
            # took the key from the new leader (drill d, tests/cluster/test_failovers.py);
            # its v2 refresh is a compare-and-swap on its own name, which fails then.
            "etcd": {"hosts": [f"{self.address(name)}:{ETCD_PORT}" for name in self.ETCD_HOSTS]},
            "bootstrap": {
                "dcs": {
                    "ttl": PATRONI_TTL, "loop_wait": PATRONI_LOOP_WAIT, "retry_timeout": PATRONI_RETRY_TIMEOUT,
                    # A commit is acknowledged once the standby has it, and Patroni
                    # promotes only that standby: no acknowledged write is lost to
                    # a failover. Not strict: with two nodes, strict mode stops every
                    # write while the standby is away; here the leader writes alone
                    # then, and Patroni promotes nobody until the standby is back in
                    # sync (the writes of that time are on one disk only).
                    "synchronous_mode": True, "synchronous_mode_strict": False,
                    "postgresql": {
                        # The old leader rejoins as a standby by rewinding its divergent end.
                        "use_pg_rewind": True,
                        "remove_data_directory_on_rewind_failure": True,
                        "remove_data_directory_on_diverged_timelines": True,
                        "parameters": {"wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on",
                                       "max_wal_senders": 5, "max_replication_slots": 5,
                                       "wal_keep_size": "128MB", "max_connections": 100},
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
                # What scripts/stack.sh's postgres start makes for the app.
                "post_bootstrap": str(HERE / "post_bootstrap.sh"),
            },
            "postgresql": {
                "listen": f"{host.address},127.0.0.1:{PG_PORT}",
                "connect_address": f"{host.address}:{PG_PORT}",
                "data_dir": str(pg / "data"), "bin_dir": str(PG_BIN[0]), "pgpass": str(pg / "pgpass"),
                "use_unix_socket": True,
                # A new standby copies the leader at once, not after a spread checkpoint (minutes).
                "basebackup": [{"checkpoint": "fast"}],
                "authentication": {
                    "superuser": {"username": "postgres", "password": passwords["superuser"]},
                    "replication": {"username": "replicator", "password": passwords["replication"]},
                },
                "parameters": {"unix_socket_directories": str(pg / "run")},
                # The rehearsal's trust for the app's roles on the cluster's own
                # network, as the single data host had (docs/topology.md);
                # superuser and replication need their passwords.
                "pg_hba": [
                    "local all all trust",
                    f"host replication replicator {self.subnet} scram-sha-256",
                    # Patroni's own look at a stopped node's timeline, which decides a rewind.
                    "host replication replicator 127.0.0.1/32 scram-sha-256",
                    f"host all postgres {self.subnet} scram-sha-256",
                    "host all postgres 127.0.0.1/32 scram-sha-256",
                    f"host all all {self.subnet} trust",
                    "host all all 127.0.0.1/32 trust",
                ],
            },
            "watchdog": {"mode": "off"},
        }

    def _start_patroni(self, host):
        directory, pg = host.path("patroni"), host.path("pg")
        directory.mkdir(parents=True, exist_ok=True)
        if pid_alive(directory / "pid"):
            return
        (pg / "run").mkdir(parents=True, exist_ok=True)
        config = directory / "patroni.yml"  # JSON is YAML
        config.write_text(json.dumps(self._patroni_config(host), indent=2) + "\n")
        config.chmod(0o600)  # it holds the passwords
        for path in (directory, config, pg, pg / "run"):
            shutil.chown(path, "postgres", "postgres")
        spawn(host, ["patroni", str(config)], directory, user="postgres")

    def patroni(self, name, path="cluster"):
        return http_json(f"http://{self.address(name)}:{PATRONI_PORT}/{path}", None)

    def reinit(self, name):
        """A PostgreSQL node copied anew from the leader (Patroni's reinitialize).
        What an operator does when an old primary cannot stream: Patroni 3.0.2
        sometimes misses that one demoted while cut off from etcd had written
        past the new leader's fork point, and skips the rewind."""
        request = urllib.request.Request(f"http://{self.address(name)}:{PATRONI_PORT}/reinitialize",
                                         data=b'{"force": true}', method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def pg_nodes(self):
        """Each node's own word on itself (Patroni's /patroni): its role, state, timeline."""
        return {name: self.patroni(name, "patroni") or {} for name in self.PG_HOSTS}

    def pg_leader(self, nodes=None):
        """The node that runs as primary by its own word, or None; while an old
        primary cut off from etcd has not demoted itself yet, the newer timeline.
        Never a node's view of the others: one cut off from etcd keeps showing
        the cluster as it last saw it."""
        nodes = self.pg_nodes() if nodes is None else nodes
        primaries = [(node.get("timeline", 0), name) for name, node in nodes.items()
                     if node.get("role") in ("master", "primary") and node.get("state") == "running"]
        return max(primaries)[1] if primaries else None

    def pg_members(self):
        """The cluster as the leader sees it (Patroni's /cluster), or {}."""
        leader = self.pg_leader()
        found = self.patroni(leader) if leader else None
        return {member["name"]: member for member in (found or {}).get("members", [])}

    def pg_whole(self):
        """One primary, and every other node its synchronous standby, running on
        the primary's timeline, by the leader's word and by its own."""
        nodes = self.pg_nodes()
        leader = self.pg_leader(nodes)
        if leader is None:
            return False
        members = self.pg_members()
        return (set(members) == set(self.PG_HOSTS)
                and all(members[name]["role"] == ("leader" if name == leader else "sync_standby")
                        and members[name]["state"] in ("running", "streaming") for name in self.PG_HOSTS)
                and all(node.get("state") == "running" and node.get("timeline") == nodes[leader].get("timeline")
                        for node in nodes.values()))

    # -- Redis under Sentinel ------------------------------------------------------------

    def _start_redis(self, host):
        for role, spec in REDIS_ROLES.items():
            directory = host.path(f"redis-{role}")
            directory.mkdir(parents=True, exist_ok=True)
            if pid_alive(directory / "pid"):
                continue
            lines = {"bind": f"{host.address} 127.0.0.1", "port": spec["port"], "protected-mode": "no",
                     "dir": str(directory), "save": '""', "daemonize": "yes",
                     "pidfile": str(directory / "pid"), "logfile": str(directory / "redis.log"),
                     **spec["settings"]}
            # A server that starts while another is primary starts as its replica,
            # never as a second primary that the sentinels would have to demote.
            primary = self.redis_primary(role) if self._sentinels_running() else None
            if primary is None and host.name != self.REDIS_HOSTS[0]:
                primary = (self.address(self.REDIS_HOSTS[0]), spec["port"])
            if primary and primary[0] != host.address:
                lines["replicaof"] = f"{primary[0]} {primary[1]}"
            config = directory / "redis.conf"
            config.write_text("".join(f"{key} {value}\n" for key, value in lines.items()))
            in_namespace(host, "redis-server", str(config))
            wait_for(lambda: ping(host.address, spec["port"]), 10, f"{host.name}'s {role} Redis")

    def _start_sentinel(self, host):
        directory = host.path("sentinel")
        directory.mkdir(parents=True, exist_ok=True)
        if pid_alive(directory / "pid"):
            return
        config = directory / "sentinel.conf"
        if not config.exists():  # afterwards the sentinel's own: it keeps what it learnt there
            first = self.address(self.REDIS_HOSTS[0])
            lines = [f"bind {host.address} 127.0.0.1", f"port {SENTINEL_PORT}", "protected-mode no",
                     f"dir {directory}", "daemonize yes", f"pidfile {directory / 'pid'}",
                     f"logfile {directory / 'sentinel.log'}"]
            for role, spec in REDIS_ROLES.items():
                lines += [f"sentinel monitor {role} {first} {spec['port']} {SENTINEL_QUORUM}",
                          f"sentinel down-after-milliseconds {role} {SENTINEL_DOWN_AFTER_MS}",
                          f"sentinel failover-timeout {role} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                          f"sentinel parallel-syncs {role} 1"]
            config.write_text("\n".join(lines) + "\n")
        in_namespace(host, "redis-sentinel", str(config))
        wait_for(lambda: ping(host.address, SENTINEL_PORT), 10, f"{host.name}'s sentinel")

    def _sentinels_running(self):
        return any(pid_alive(self.hosts[name].path("sentinel", "pid")) for name in self.SENTINEL_HOSTS)

    def redis_primary(self, role):
        """(address, port) of the role's primary, as most of the sentinels that answer say."""
        votes = {}
        for name in self.SENTINEL_HOSTS:
            try:
                found = sentinel(self.address(name)).execute_command("SENTINEL", "get-master-addr-by-name", role)
            except redis.RedisError:
                continue
            if found:
                primary = (found[0], int(found[1]))
                votes[primary] = votes.get(primary, 0) + 1
        return max(votes, key=votes.get) if votes else None

    def redis_roles(self):
        """Each Redis server's own word: {host: {role: "primary"|"replica"|None}}."""
        found = {}
        for name in self.REDIS_HOSTS:
            found[name] = {}
            for role, spec in REDIS_ROLES.items():
                try:
                    info = redis_client(self.address(name), spec["port"]).info("replication")
                    found[name][role] = "primary" if info["role"] == "master" else "replica"
                except redis.RedisError:
                    found[name][role] = None
        return found

    def redis_whole(self):
        """Each role: one primary, a replica linked to it, and every sentinel agreeing
        with a replica and the other sentinels known."""
        for role, spec in REDIS_ROLES.items():
            primary = self.redis_primary(role)
            if primary is None:
                return False
            for name in self.SENTINEL_HOSTS:
                try:
                    watcher = sentinel(self.address(name))
                    master = watcher.execute_command("SENTINEL", "master", role)
                    replicas = watcher.execute_command("SENTINEL", "replicas", role)
                except redis.RedisError:
                    return False
                if (master.get("ip"), int(master.get("port", 0))) != primary or "s_down" in master.get("flags", ""):
                    return False
                if int(master.get("num-other-sentinels", 0)) < len(self.SENTINEL_HOSTS) - 1:
                    return False
                if not any(r.get("flags") == "slave" and r.get("master-link-status") == "ok" for r in replicas):
                    return False
        return True

    # -- who leads -----------------------------------------------------------------------

    def roles(self, name):
        """What the host is now, for cluster.py's status."""
        found = {}
        if name in self.PG_HOSTS:
            own, member = self.patroni(name, "patroni") or {}, self.pg_members().get(name, {})
            # The leader's word (sync_standby or replica) for the others, the node's own for itself.
            role = member.get("role", "replica") if own.get("role") == "replica" else own.get("role") and "leader"
            found["postgres"] = {"role": role, "state": own.get("state"), "timeline": own.get("timeline")}
        if name in self.REDIS_HOSTS:
            found["redis"] = self.redis_roles()[name]
        return found


# -- processes -------------------------------------------------------------------------------


def in_namespace(host, *argv, user=None):
    prefix = ["ip", "netns", "exec", host.ns]
    if user:
        prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    return run(*prefix, *argv)


def spawn(host, argv, directory, user=None):
    """A long-running process in the host's namespace, in a session of its own,
    its output in DIRECTORY/out.log and its process id in DIRECTORY/pid. Both
    `ip netns exec` and setpriv exec the next program: the id is the process's."""
    prefix = ["ip", "netns", "exec", host.ns]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(directory)}
    if user:
        prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    with open(directory / "out.log", "ab") as out:
        process = subprocess.Popen(prefix + argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=env, cwd=directory)
    (directory / "pid").write_text(f"{process.pid}\n")


def stop_pidfile(pidfile, seconds=30):
    """SIGTERM, then wait for the process to go."""
    if not pid_alive(pidfile):
        return
    pid = int(Path(pidfile).read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not process_running(pid), seconds, f"{pidfile} to stop")


def process_running(pid):
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pid_alive(pidfile):
    try:
        return process_running(int(Path(pidfile).read_text()))
    except (FileNotFoundError, ValueError):
        return False


def redis_client(address, port, **options):
    """One try, one second: a dead server is an answer here (redis-py would retry with backoff)."""
    return redis.Redis(address, port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0),
                       **options)


def sentinel(address):
    return redis_client(address, SENTINEL_PORT, decode_responses=True)


def ping(address, port):
    try:
        return redis_client(address, port).ping()
    except redis.RedisError:
        return False


def http_text(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def http_json(url, default):
    """The JSON of a 2xx or of an error answer (Patroni answers 503 with its state), or ``default``."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return json.loads(error.read())
        except ValueError:
            return default
    except (OSError, ValueError):
        return default


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds} s")
        time.sleep(0.2)
