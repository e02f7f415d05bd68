"""A hostile Python job. Its parameter names the attack; each has a test in tests/src/python.rs that
asserts how it is contained. An attack that gets anything reports it, so that the test sees it."""

import os
import sys
import time

from sluice import Job, Report


def _try(f):
    """`ok: <value>` or `error: <exception type>`."""
    try:
        return f"ok: {f()!r}"
    except BaseException as e:  # noqa: BLE001 - the attack reports whatever stopped it
        return f"error: {type(e).__name__}"


def _open_file():
    with open("/etc/passwd") as f:
        return f.read()


def _socket():
    import socket

    s = socket.create_connection(("example.com", 80), timeout=1)
    return s.recv(10)


def _subprocess():
    import subprocess

    return subprocess.run(["ls", "/"], capture_output=True).stdout


def run(job: Job) -> Report:
    attack = job.params
    if attack == "open-file":
        return Report("open-file").text(_try(_open_file))
    if attack == "list-dir":
        return Report("list-dir").text(_try(lambda: os.listdir("/")))
    if attack == "env":
        return Report("env").text(_try(lambda: dict(os.environ))).text(_try(lambda: sys.argv))
    if attack == "clock":
        t0, m0 = time.time(), time.monotonic()
        n = 0
        for i in range(2_000_000):
            n += i
        t1, m1 = time.time(), time.monotonic()
        return Report("clock").scalar("t0", t0).scalar("t1", t1).scalar("m0", m0).scalar("m1", m1)
    if attack == "sleep":
        m0 = time.monotonic()
        time.sleep(30)
        return Report("sleep").scalar("slept", time.monotonic() - m0)
    if attack == "urandom":
        import random

        return Report("urandom").text(os.urandom(16).hex()).text(str(random.random()))
    if attack == "socket":
        return Report("socket").text(_try(_socket))
    if attack == "subprocess":
        return Report("subprocess").text(_try(_subprocess))
    if attack == "loop":
        while True:
            pass
    if attack == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
    if attack == "print-flood":
        for i in range(20_000):
            print(f"line {i} " + "y" * 100)
        return Report("printed")
    if attack == "exception":
        raise ValueError("the hostile job raised on purpose")
    if attack == "sys-exit":
        sys.exit(3)
    if attack == "os-exit":
        os._exit(4)
    raise ValueError(f"unknown attack {attack!r}")
