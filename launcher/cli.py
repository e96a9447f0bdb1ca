"""``snapmover launcher``: run the controller (registered through the ``snapmover.commands`` entry point)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

import click

from launcher import logfmt
from launcher.config import ConfigurationError, LauncherConfig, load_config


def _namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return "snapmover"


@click.command()
@click.option("--kubeconfig", envvar="KUBECONFIG", default=None, help="kubeconfig (default: in-cluster config).")
@click.option("--namespace", default=None, help="Namespace to watch (default: the launcher's own).")
@click.option("--config-map", default="snapmover-config", show_default=True, help="ConfigMap with the settings.")
@click.option("--metrics-port", default=8080, show_default=True, help="Port of /metrics and /healthz (0: any).")
@click.option("--identity", default=None, help="Leader election identity (default: hostname-pid).")
@click.option(
    "--log-format",
    type=click.Choice(logfmt.FORMATS),
    default=None,
    help="Log lines as text or json (default: the ConfigMap's logFormat, else text).",
)
def launcher(
    kubeconfig: str | None,
    namespace: str | None,
    config_map: str,
    metrics_port: int,
    identity: str | None,
    log_format: str | None,
) -> None:
    """Watch DataUploads/DataDownloads and run one mover Job per CR."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    from jobs import __version__
    from launcher import metrics
    from launcher.controller import Controller
    from launcher.leader import LeaderElector

    logfmt.setup(log_format or "text")
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
    api = client.ApiClient()
    api.user_agent = f"snapmover-launcher/{__version__}"  # tells our requests apart in audit logs
    ns = _namespace(namespace)
    try:
        data = client.CoreV1Api(api).read_namespaced_config_map(config_map, ns).data or {}
    except ApiException as e:
        if e.status != 404:
            raise click.ClickException(f"cannot read ConfigMap {ns}/{config_map}: {e.reason}") from e
        data = {}
    try:
        cfg: LauncherConfig = load_config(data, ns)
    except ConfigurationError as e:
        raise click.ClickException(f"invalid ConfigMap {ns}/{config_map}: {e}") from e
    logfmt.setup(logfmt.chosen(log_format, cfg.log_format))
    metrics.configure(cfg.datamover_name)
    me = identity or f"{socket.gethostname()}-{os.getpid()}"
    controller = Controller(api, cfg, me)
    server = metrics.serve(metrics_port, lambda: not controller.stop.is_set())
    elector = LeaderElector(api, ns, me, controller.is_leader)
    signal.signal(signal.SIGTERM, lambda *_: controller.stop.set())
    threading.Thread(target=elector.run, args=(controller.stop,), name="leader", daemon=True).start()
    logging.getLogger("snapmover.launcher").info(
        "launcher %s watching namespace %s for datamover %r; metrics on :%d",
        me,
        ns,
        cfg.datamover_name,
        server.server_address[1],
    )
    try:
        controller.run()
    except KeyboardInterrupt:
        controller.stop.set()
    elector.release()
    sys.exit(0)
