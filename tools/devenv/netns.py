"""The network namespace that holds the local cluster.

Kubernetes refuses loopback addresses in EndpointSlices, so pods need real-looking IPs, and some
process must be able to bind them. Inside a namespace of our own, ``10.244.0.0/16`` is routed to
``lo`` as local, which makes every pod IP a real address there and nowhere else: nothing we start
ever sends traffic to a private address outside the namespace.

A process joins the namespace with ``setns(2)``; children inherit it. Python 3.11 has no
``os.setns``, so libc is called through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from devenv import paths

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    """The namespace cannot be created or entered; the message names the missing piece."""


def path(name: str = paths.NETNS) -> Path:
    return NETNS_DIR / name


def exists(name: str = paths.NETNS) -> bool:
    return path(name).exists()


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise NetnsError("the 'ip' command (Debian package iproute2) is missing") from exc


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise NetnsError(f"{what} failed: {result.stderr.strip() or result.stdout.strip()}")


def ensure(name: str = paths.NETNS) -> None:
    """Create the namespace and its local routes; a no-op when they are there already."""
    if os.geteuid() != 0:
        raise NetnsError(
            "the local cluster runs in a network namespace, and creating one needs root "
            "(ip netns add): run as root or with sudo"
        )
    if not exists(name):
        _check(_ip("netns", "add", name), f"ip netns add {name}")
    _check(_ip("-n", name, "link", "set", "lo", "up"), "bringing up lo")
    routes = _ip("-n", name, "route", "show", "table", "local", paths.POD_CIDR)
    if paths.POD_CIDR.split("/")[0] not in routes.stdout:
        _check(
            _ip("-n", name, "route", "add", "local", paths.POD_CIDR, "dev", "lo", "table", "local"),
            f"making {paths.POD_CIDR} local",
        )
    addrs = _ip("-n", name, "-o", "addr", "show", "dev", "lo")
    if f" {paths.ADVERTISE_ADDRESS}/" not in addrs.stdout:
        _check(
            _ip("-n", name, "addr", "add", f"{paths.ADVERTISE_ADDRESS}/32", "dev", "lo"),
            f"adding {paths.ADVERTISE_ADDRESS}",
        )


def inside(name: str = paths.NETNS) -> bool:
    """Whether this process already lives in the namespace."""
    if not exists(name):
        return False
    mine = os.stat("/proc/self/ns/net")
    theirs = os.stat(path(name))
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def enter(name: str = paths.NETNS) -> None:
    """Move the calling thread (and every thread and child it starts later) into the namespace.

    Call it before any other thread starts: threads created earlier stay where they were.
    """
    if inside(name):
        return
    ensure(name)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path(name), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns into {path(name)} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def pids(name: str = paths.NETNS) -> list[int]:
    """Processes living in the namespace."""
    if not exists(name):
        return []
    result = _ip("netns", "pids", name)
    return [int(p) for p in result.stdout.split()]


def delete(name: str = paths.NETNS) -> None:
    if exists(name):
        _check(_ip("netns", "del", name), f"ip netns del {name}")
