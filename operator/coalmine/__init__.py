"""coalmine: a Kubernetes operator that rolls out immutable images with a canary strategy."""

__version__ = "0.1.0.dev0"
