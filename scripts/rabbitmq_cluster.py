"""A RabbitMQ cluster on loopback for the benchmarks (issue #17): `n` nodes
of the Debian package's server (`apt-get install rabbitmq-server`), each
with its own node name, AMQP and distribution ports and data directory
under `root`, one Erlang cookie, joined into one cluster with
`rabbitmqctl join_cluster`. Every port listens on 127.0.0.1 only (epmd
too, when this starts it). `stop()` stops the nodes it started, by pid;
epmd, the host's shared Erlang port mapper, is left running (stop it with
`epmd -kill` when no other Erlang node needs it).
"""
import os
import signal
import socket
import subprocess
import time

RABBIT_BIN = os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RabbitCluster:
    def __init__(self, root, n=3):
        self.root = root
        self.home = os.path.join(root, "home")
        os.makedirs(self.home, exist_ok=True)
        cookie = os.path.join(self.home, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write("FERRYBENCH" + os.urandom(8).hex().upper())
        os.chmod(cookie, 0o400)
        self.nodes = []
        for i in range(1, n + 1):
            d = os.path.join(root, f"rabbit{i}")
            os.makedirs(d, exist_ok=True)
            node = {"name": f"ferrybench{i}_{os.getpid()}@localhost", "dir": d,
                    "amqp": free_port(), "dist": free_port(), "proc": None}
            with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
                f.write(f"listeners.tcp.default = 127.0.0.1:{node['amqp']}\nloopback_users = none\n")
            with open(os.path.join(d, "enabled_plugins"), "w") as f:
                f.write("[].\n")
            self.nodes.append(node)

    def env(self, node=None):
        env = dict(os.environ, HOME=self.home, ERL_EPMD_ADDRESS="127.0.0.1")
        if node:
            d = node["dir"]
            env.update({
                "RABBITMQ_NODENAME": node["name"],
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node["amqp"]),
                "RABBITMQ_DIST_PORT": str(node["dist"]),
                "RABBITMQ_MNESIA_BASE": os.path.join(d, "mnesia"),
                "RABBITMQ_LOG_BASE": os.path.join(d, "log"),
                "RABBITMQ_CONFIG_FILE": os.path.join(d, "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(d, "enabled_plugins"),
                "RABBITMQ_PID_FILE": os.path.join(d, "pid"),
                # The distribution port on loopback only; RABBITMQ_ERL_ARGS
                # adds emulator flags (e.g. "+S 1:1", one scheduler).
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": " ".join(
                    ["-kernel inet_dist_use_interface {127,0,0,1}", os.environ.get("RABBITMQ_ERL_ARGS", "")]).strip(),
            })
        return env

    def ctl(self, node, *args, timeout=120):
        subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), "-n", node["name"], *args], env=self.env(),
                       check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def await_startup(self, node, within=180):
        """Waits until `node` runs RabbitMQ (retried while its VM is not up yet)."""
        deadline = time.time() + within
        while True:
            try:
                self.ctl(node, "await_startup", "--timeout", "30", timeout=60)
                return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                if time.time() > deadline:
                    raise
                time.sleep(1)

    def start(self):
        for node in self.nodes:
            log = open(os.path.join(node["dir"], "out.log"), "ab")
            node["proc"] = subprocess.Popen([os.path.join(RABBIT_BIN, "rabbitmq-server")], env=self.env(node),
                                            stdout=log, stderr=log, start_new_session=True)
        for node in self.nodes:
            self.await_startup(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first["name"])
            self.ctl(node, "start_app")
        for node in self.nodes:
            self.await_startup(node)

    def pids(self):
        """The nodes' Erlang VM (beam.smp) pids."""
        pids = []
        for node in self.nodes:
            try:
                with open(os.path.join(node["dir"], "pid")) as f:
                    pids.append(int(f.read().strip()))
            except (OSError, ValueError):
                pass
        return pids

    def stop(self):
        for node in self.nodes:
            try:
                self.ctl(node, "shutdown", timeout=60)
            except Exception:  # noqa: BLE001 - killed below
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for node in self.nodes:
            if node["proc"]:
                try:
                    os.killpg(node["proc"].pid, signal.SIGKILL)
                except OSError:
                    pass
                node["proc"].wait(timeout=30)
        time.sleep(0.5)
