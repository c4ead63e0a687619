"""Test servers of a test's own: a Redis to stop and start, a link to cut,
as a partition looks to the app, a Redis that never answers, and a Redis
with a replica and Sentinels to fail over (tests/app and tests/faults)."""

import socket
import subprocess
import threading

import redis

from tests.support.bounds import UNPROMISED_WAIT
from tests.support.waiting import eventually


def _serve(listener, handle):
    """``handle(connection)`` for each connection ``listener`` takes, in a thread, until it is closed."""

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            handle(conn)

    threading.Thread(target=accept, daemon=True).start()


def _pump(source, sink, flowing=None):
    """Copy what ``source`` sends to ``sink`` until either closes; while
    ``flowing`` (an Event) is clear, the bytes are dropped: a stalled link."""
    try:
        while data := source.recv(65536):
            if flowing is None or flowing.is_set():
                sink.sendall(data)
    except OSError:
        pass
    for end in (source, sink):
        end.close()


def _answers(client):
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


class RedisServer:
    """redis-server on a unix socket, without persistence."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.url = f"unix://{socket_path}"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.socket_path,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        eventually(lambda: _answers(client), seconds=UNPROMISED_WAIT)
        client.close()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Link:
    """A unix-socket relay to Redis. ``cut()`` drops every connection and
    refuses new ones, as a partition looks to the app; Redis keeps its data."""

    def __init__(self, target_path, path=None):
        self.target_path = target_path
        self.path = path or target_path + ".link"
        self.url = f"unix://{self.path}"
        self.up = True
        self._sockets = []
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(self.path)
        self._listener.listen(64)
        _serve(self._listener, self._connect)

    def _connect(self, client):
        if not self.up:
            client.close()
            return
        server = socket.socket(socket.AF_UNIX)
        server.connect(self.target_path)
        self._sockets += [client, server]
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def cut(self):
        self.up = False
        for end in self._sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._sockets = []

    def mend(self):
        self.up = True

    def close(self):
        self.cut()
        self._listener.close()


class SilentRedis:
    """A TCP listener that takes connections and reads what comes, never
    answering: a Redis that hangs. Notes, per connection, the bytes sent and
    whether the client gave up on it (closed it)."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self.connections = []
        _serve(self._listener, self._take)

    def _take(self, conn):
        seen = {"bytes": 0, "given_up": False}
        self.connections.append(seen)
        threading.Thread(target=self._read, args=(conn, seen), daemon=True).start()

    @staticmethod
    def _read(conn, seen):
        conn.settimeout(UNPROMISED_WAIT)
        with conn:
            try:
                while data := conn.recv(65536):
                    seen["bytes"] += len(data)
                seen["given_up"] = True
            except OSError:
                pass  # the client kept waiting

    def close(self):
        self._listener.close()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HeldPipe:
    """A TCP forwarder from a port of its own to ``target_port`` on loopback.
    ``hold()`` stalls what flows towards the connecting side, connections
    open: a replica behind it stops receiving its primary's writes, as a
    stalled replication link does, while it still answers everyone else."""

    def __init__(self, target_port):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        _serve(self._listener, self._connect)

    def _connect(self, client):
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        threading.Thread(target=_pump, args=(client, server), daemon=True).start()
        threading.Thread(target=_pump, args=(server, client, self.flowing), daemon=True).start()

    def hold(self):
        self.flowing.clear()

    def close(self):
        self._listener.close()


class SentinelGroup:
    """A Redis primary and its replica on loopback, watched by three
    Sentinels (quorum 2) under ``service``, as a highly available deployment
    runs them; the test may kill the primary and stall the replica (whose
    link to the primary goes through a HeldPipe)."""

    DOWN_AFTER_MS = 1000  # not shorter than L2's caught-up second (cache/l2.py)

    def __init__(self, directory, service="cache"):
        self.directory, self.service = directory, service
        self.redis = {}  # port -> process
        self.sentinels = []
        primary, replica = _free_port(), _free_port()
        self._start_redis(primary)
        self.link = HeldPipe(primary)
        self._start_redis(replica, "--replicaof", "127.0.0.1", str(self.link.port))
        for number in range(3):
            port = _free_port()
            conf = f"{directory}/sentinel{number}.conf"
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                        f"sentinel monitor {service} 127.0.0.1 {primary} 2\n"
                        f"sentinel down-after-milliseconds {service} {self.DOWN_AFTER_MS}\n"
                        # Long: the Sentinels would otherwise soon point the replica at the
                        # primary itself, past the pipe.
                        f"sentinel failover-timeout {service} 60000\n")
            self.sentinels.append((port, subprocess.Popen(["redis-sentinel", conf], stdout=subprocess.DEVNULL)))
        self.url = "redis+sentinel://" + ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels) + f"/{service}/0"
        eventually(lambda: self._replica_online(primary), seconds=UNPROMISED_WAIT)
        eventually(lambda: all(self._sentinel_knows_replica(port) for port, _ in self.sentinels),
                   seconds=UNPROMISED_WAIT)

    def _start_redis(self, port, *args):
        self.redis[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.directory, *args], stdout=subprocess.DEVNULL)
        eventually(lambda: _answers(self.client(port)), seconds=UNPROMISED_WAIT)

    @staticmethod
    def client(port):
        return redis.Redis(port=port, socket_timeout=1)

    def _replica_online(self, primary):
        return any(isinstance(v, dict) and v.get("state") == "online"
                   for k, v in self.client(primary).info("replication").items() if k.startswith("slave"))

    def _sentinel_knows_replica(self, port):
        try:
            return len(redis.Redis(port=port).sentinel_slaves(self.service)) == 1
        except redis.RedisError:
            return False

    def primary(self):
        """The port the Sentinels name as the primary now."""
        _, port = redis.Redis(port=self.sentinels[0][0]).sentinel_get_master_addr_by_name(self.service)
        return int(port)

    def replica(self):
        return next(port for port in self.redis if port != self.primary())

    def signal(self, port, signum):
        self.redis[port].send_signal(signum)

    def stall_replication(self):
        self.link.hold()

    def wait_failover(self, old_primary):
        """Until the Sentinels name another primary, which says it is one."""
        eventually(lambda: self.primary() != old_primary
                   and self.client(self.primary()).info("replication")["role"] == "master",
                   seconds=UNPROMISED_WAIT, step=0.1)

    def stop(self):
        for process in [*self.redis.values(), *(process for _, process in self.sentinels)]:
            process.kill()
            process.wait(10)
        self.link.close()
