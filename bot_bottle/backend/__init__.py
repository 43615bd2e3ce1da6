"""Bottle backends (bwrap, docker, kubernetes) behind the `Backend` protocol of `base`."""

from __future__ import annotations

from .base import Backend, RunPlan


def get_backend(name: str, environ: dict) -> Backend:
    if name == "kubernetes":
        from .kubernetes import KubernetesBackend
        return KubernetesBackend(environ)
    if name == "docker":
        from .docker import DockerBackend
        return DockerBackend(environ)
    from .bwrap import BwrapBackend
    return BwrapBackend(environ)


__all__ = ["Backend", "RunPlan", "get_backend"]
