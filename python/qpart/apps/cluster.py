"""``qpart serve --replicas N`` / ``--ray-address ADDR``: the same FastAPI app deployed as a
Ray Serve application - N replicas behind one HTTP address, on a local Ray instance bound to
loopback or on an existing Ray cluster (docs/SERVING.md, "Scaling out").

Replicas share nothing but the disk cache: the deploying process registers every model
first (training, calibration and tables land in the cache), then each replica rebuilds its
registry from that cache in seconds. Plan ids are deterministic, so a device may plan on one
replica and fetch or infer on another.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

from ..serving.deps import ServerSettings
from ..serving.server import create_app
from .serve import REGISTRATION_ERRORS, build_entries, settings_from_args

INSTALL_HINT = (
    "--replicas / --ray-address need Ray Serve: pip install 'qpart[cluster]' "
    "(or pip install 'ray[serve]')"
)
APP_NAME = "qpart"
DEPLOYMENT_NAME = "QPartIngress"


def ray_available() -> bool:
    """Whether Ray Serve can be imported."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ReplicaConfig:
    """What every replica needs to rebuild the registry from the cache (picklable)."""

    models: tuple[str, ...]
    config: str | None
    cache_dir: str | None
    seed: int
    calib_samples: int
    settings: ServerSettings
    threads: int = 1
    int8_activations: bool = False

    def build_app(self):
        """The FastAPI app of one replica (runs inside the replica process)."""
        import torch

        torch.set_num_threads(self.threads)
        args = argparse.Namespace(
            model=list(self.models),
            config=self.config,
            cache_dir=self.cache_dir,
            seed=self.seed,
            progress=False,
            calib_samples=self.calib_samples,
            int8_activations=self.int8_activations,
        )
        return create_app(build_entries(args, quiet=True), self.settings)


def application(config: ReplicaConfig, replicas: int):
    """The Ray Serve application: :meth:`ReplicaConfig.build_app` as the ingress of a
    deployment with ``replicas`` replicas."""
    from ray import serve

    def build_app():  # a plain function: Ray Serve calls it once per replica
        return config.build_app()

    ingress = serve.ingress(build_app)
    deployment = serve.deployment(
        ingress(),
        name=DEPLOYMENT_NAME,
        num_replicas=replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=max(8, config.settings.max_concurrency),
        health_check_period_s=2,
        health_check_timeout_s=30,
    )
    return deployment.bind()


def start(
    config: ReplicaConfig,
    replicas: int,
    host: str = "127.0.0.1",
    port: int = 8000,
    ray_address: str | None = None,
) -> None:
    """Connects to (``ray_address``) or starts a local Ray instance on loopback, starts
    Serve's HTTP proxy on ``host:port`` and deploys the application; returns once every
    replica is ready."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(config, replicas), name=APP_NAME, route_prefix="/", blocking=False)


def stop() -> None:
    """Deletes the application, stops Serve and disconnects from Ray."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def run_cluster(args: argparse.Namespace) -> int:
    """``qpart serve`` with ``--replicas`` / ``--ray-address``: registers the models once
    (filling the cache), deploys them, and blocks until interrupted."""
    if not ray_available():
        print(f"qpart serve: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    try:
        entries = build_entries(args)  # fills the cache; a bad model fails here, clearly
    except REGISTRATION_ERRORS as exc:
        print(f"qpart serve: error: {exc}", file=sys.stderr)
        return 2
    config = ReplicaConfig(
        tuple(getattr(args, "model", None) or []),
        getattr(args, "config", None),
        str(args.cache_dir) if args.cache_dir else os.environ.get("QPART_CACHE"),
        args.seed,
        args.calib_samples,
        settings,
        args.threads,
        bool(getattr(args, "int8_activations", False)),
    )
    start(config, args.replicas, args.host, args.port, args.ray_address)
    where = args.ray_address or "a local Ray instance"
    print(
        f"qpart serve: {', '.join(repr(m) for m in entries)} as {args.replicas} Ray Serve "
        f"replicas on {where}, http://{args.host}:{args.port}",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
