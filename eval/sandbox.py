"""Run untrusted programs (model completions + benchmark tests) with containment.

Small on purpose, so it can be audited in one sitting. Two layers:

* ``Isolation`` -- set up ONCE per worker process (see ``worker.py``) by ``isolate_worker``:
    - a new network namespace (only a down loopback: no network at all) and a new mount
      namespace with private tmpfs mounted over the world-writable directories
      (/tmp, /var/tmp, /dev/shm), so nothing a program writes there leaks out.
      As root: ``unshare(CLONE_NEWNET|CLONE_NEWNS)``. Not root: the same inside a new
      unprivileged user namespace (``CLONE_NEWUSER``), where the kernel allows it.
    - as root: an unprivileged sandbox uid claimed for this worker alone (a flock on
      ``<cache>/sandbox-locks/uid-N.lock``; default uids 61000+, override with
      ``AIGC_SANDBOX_UID_BASE``; uids that have a passwd entry are never used). Programs
      run as that uid, so they cannot write anything owned by root or anybody else, and
      RLIMIT_NPROC (per-uid, and *not* enforced for root) bounds fork bombs. When a run
      times out or leaves anything behind, every process of that uid is SIGKILLed
      (``kill(-1)`` from a helper running as the uid).
    - the worker is a child subreaper: every descendant of a program is re-parented to it
      when its parent dies (a daemonising double fork or setsid() does not escape), and is
      killed and reaped after each run (``_sweep``), in every mode.
* ``run`` -- one step (a command to exec, or Python source to exec in a forked copy of the
  pre-imported worker interpreter) in a scratch directory, with: a new session/process
  group, rlimits (CPU seconds, address space or data segment, processes, file size,
  open files), ``PR_SET_NO_NEW_PRIVS``, parent-death SIGKILL, a clean environment given by
  the caller, stdin from /dev/null, stdout/stderr captured and capped (the run is killed
  once it has printed ``kill_output`` bytes), and a wall-clock timeout that SIGKILLs the
  whole group (and, as root, every process of the sandbox uid).

Fallbacks (the worker reports which one it got; ``report.json`` records it):
* root without CAP_SYS_ADMIN (e.g. a default Docker container): uid switching still works,
  but there is no network namespace and no private /tmp -- the network is NOT isolated.
* not root, user namespaces allowed (most distributions): network isolated, private /tmp;
  programs keep the invoking user's identity, so they can write where that user can, and
  RLIMIT_NPROC counts inside the worker's own user namespace.
* not root, no user namespaces: only rlimits, process-group/subreaper cleanup and the
  timeout; RLIMIT_NPROC is set to the user's current task count plus the budget.
* root that cannot switch uid (rootless container): programs run as root with every
  capability (and the bounding set) dropped; RLIMIT_NPROC is not enforced for root.
Compile steps of Go and Rust run as the invoking user (``as_invoker``) because their
toolchains and shared caches live under the invoking user's home; none of the compile
commands used by the harness executes code from the program being compiled.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pwd
import resource
import select
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field

MiB = 1 << 20
GiB = 1 << 30

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_REC, MS_PRIVATE = 2, 4, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 24, 36, 38
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Limits:
    """Resource limits for one step. ``None`` leaves a limit as inherited."""

    cpu_s: int | None = 10
    address_space: int | None = 2 * GiB  # RLIMIT_AS; None for JVM/Go/node (huge reservations)
    data: int | None = None  # RLIMIT_DATA: heap + private writable mappings, what those can use
    nproc: int | None = 32  # processes+threads of the sandbox uid
    fsize: int | None = 64 * MiB  # largest file a program may write
    nofile: int | None = 256


@dataclass
class Isolation:
    """What ``isolate_worker`` managed to set up (reported in the run's report)."""

    mode: str = "none"  # "uid" (root, programs run as a claimed uid), "userns" or "none"
    uid: int | None = None
    gid: int | None = None
    network_isolated: bool = False
    private_tmp: bool = False
    scratch_base: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class StepResult:
    returncode: int | None  # exit status, or None when killed by a signal
    signal: int | None
    timed_out: bool
    output_limited: bool
    stdout: str
    stderr: str
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- worker setup


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _unshare(flags: int) -> bool:
    return _libc.unshare(ctypes.c_int(flags)) == 0


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


DEFAULT_UID_BASE = 61000


def _claim_uid(lock_dir: str, base: int) -> tuple[int, int] | None:
    """Lock an unused uid for this worker (other workers/harnesses skip locked ones)."""
    os.makedirs(lock_dir, exist_ok=True)
    for uid in range(base, base + 512):
        try:
            pwd.getpwuid(uid)
            continue  # a real account: never borrow it
        except KeyError:
            pass
        fd = os.open(os.path.join(lock_dir, f"uid-{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _HELD_LOCKS.append(fd)  # held for the life of the worker
        return uid, uid
    return None


_HELD_LOCKS: list[int] = []


def kill_uid(uid: int, gid: int) -> bool:
    """SIGKILL every process of ``uid`` (from a helper that becomes that uid). True if it could."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            try:
                os.kill(-1, signal.SIGKILL)  # everything this uid may signal: its own processes
            except ProcessLookupError:
                pass
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _private_mounts(iso: Isolation) -> None:
    _check(_libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None), "make / private")
    for d in PRIVATE_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            _check(
                _libc.mount(b"tmpfs", d.encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV), b"size=2g,mode=1777"),
                f"tmpfs on {d}",
            )
    iso.private_tmp = True


def isolate_worker(cache_dir: str, uid_base: int = DEFAULT_UID_BASE, namespaces: bool = True) -> Isolation:
    """Enter the per-worker namespaces and claim a sandbox uid. Call once, single-threaded.
    ``namespaces=False`` skips the namespaces (to test the fallback)."""
    iso = Isolation()
    uid, gid = os.getuid(), os.getgid()
    if not namespaces:
        iso.notes.append("namespaces disabled (AIGC_SANDBOX_NAMESPACES=0)")
    if uid == 0:
        claimed = _claim_uid(os.path.join(cache_dir, "sandbox-locks"), uid_base)
        if claimed and kill_uid(*claimed):  # also clears strays a crashed run left behind
            iso.mode, (iso.uid, iso.gid) = "uid", claimed
        else:
            iso.notes.append("could not switch to an unprivileged uid; programs run as root")
        netns = namespaces and _unshare(CLONE_NEWNET)
        mntns = namespaces and _unshare(CLONE_NEWNS)
    else:
        netns = mntns = namespaces and _unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS)
        if netns:
            iso.mode = "userns"
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
            _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
        elif namespaces:
            iso.notes.append("unprivileged user namespaces unavailable")
    iso.network_isolated = netns
    if not netns:
        iso.notes.append(
            "no network namespace (needs root with CAP_SYS_ADMIN or user namespaces): programs can reach the network"
        )
    if mntns:
        try:
            _private_mounts(iso)
        except OSError as e:
            iso.notes.append(f"no private /tmp: {e}")
    if iso.private_tmp:
        iso.scratch_base = "/tmp/aigc-sandbox"
        os.makedirs(iso.scratch_base, mode=0o711, exist_ok=True)
    else:
        import tempfile

        iso.scratch_base = tempfile.mkdtemp(prefix="aigc-sandbox-")
    os.chmod(iso.scratch_base, 0o711)
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    return iso


# ----------------------------------------------------------------------------- scratch dirs


def make_scratch(iso: Isolation, files: dict[str, str | bytes]) -> str:
    import tempfile

    d = tempfile.mkdtemp(dir=iso.scratch_base)
    for name, content in files.items():
        path = os.path.join(d, name)
        if os.path.dirname(name):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
    chown_tree(iso, d)
    return d


def chown_tree(iso: Isolation, d: str) -> None:
    if iso.mode != "uid":
        return
    for root, _dirs, files in os.walk(d):
        os.chown(root, iso.uid, iso.gid)
        for name in files:
            os.chown(os.path.join(root, name), iso.uid, iso.gid, follow_symlinks=False)


def remove_scratch(d: str) -> None:
    def fix(func, path, _exc):  # a program may have chmod-ed things away
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            func(path)
        except OSError:
            pass

    shutil.rmtree(d, onerror=fix)


# ----------------------------------------------------------------------------- one step


def _user_tasks(uid: int) -> int:
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{p}/task"))
            except OSError:
                pass
    return n


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    if os.geteuid() == 0:  # root regains capabilities at execve unless the bounding set is empty
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last = int(f.read())
        except OSError:
            last = 40
        for cap in range(last + 1):
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def _child_setup(
    iso: Isolation, cwd: str, limits: Limits, as_invoker: bool, out_w: int, err_w: int, nproc_extra: int
) -> None:
    """Runs in the forked child, before exec / before the Python program. Raises on failure."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, 65536)
    os.chdir(cwd)
    os.umask(0o022)
    for res, value in (
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.address_space),
        (resource.RLIMIT_DATA, limits.data),
        (resource.RLIMIT_NPROC, None if limits.nproc is None else limits.nproc + nproc_extra),
        (resource.RLIMIT_FSIZE, limits.fsize),
        (resource.RLIMIT_NOFILE, limits.nofile),
        (resource.RLIMIT_CORE, 0),
    ):
        if value is not None:
            resource.setrlimit(res, (value, value))
    if iso.mode == "uid" and not as_invoker:
        os.setgroups([])
        os.setresgid(iso.gid, iso.gid, iso.gid)
        os.setresuid(iso.uid, iso.uid, iso.uid)  # drops every capability
    elif not as_invoker and (iso.mode == "userns" or os.geteuid() == 0):
        # userns: the worker holds full capabilities inside its user namespace; root without a
        # sandbox uid: at least no capability (no DAC override, no kill/ptrace of others, no mount)
        _drop_capabilities()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setresuid, which clears it
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


def _exec_python(source: str, path: str, env: dict[str, str]) -> int:
    """Run ``source`` as ``__main__`` in this (forked) interpreter, like ``python3 path``.
    sys.stdin/stdout/stderr are the worker's objects, now on /dev/null and the capture pipes."""
    import atexit
    import builtins
    import traceback
    import types

    if dict(os.environ) != env:  # normally equal: the worker already has the programs' environment
        os.environ.clear()
        os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if "random" in sys.modules:
        sys.modules["random"].seed()  # a fresh interpreter would seed from urandom too
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path.insert(0, os.path.dirname(path))
    rc = 0
    try:
        exec(compile(source, path, "exec"), main.__dict__)
    except SystemExit as e:
        if e.code is None:
            rc = 0
        elif isinstance(e.code, int):
            rc = e.code & 0xFF
        else:
            print(e.code, file=sys.stderr)
            rc = 1
    except BaseException as e:  # noqa: BLE001 - this *is* the top level of the program
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)  # hide this frame
        rc = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    return rc


def _sweep(deadline_s: float = 2.0) -> int:
    """Kill and reap every child of this (subreaper) worker: orphans a program left behind.
    Every descendant of a program ends up a child of the worker once its parent dies, so this
    reaches them all (a fork bomb is bounded by RLIMIT_NPROC). Returns how many it killed."""
    me = os.getpid()
    killed = 0
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with open(f"/proc/{me}/task/{me}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            pids = []
        while True:  # reap whatever already died
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return killed
            if pid == 0:
                break
            if pid in pids:
                pids.remove(pid)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    return killed


def _nproc_extra(iso: Isolation, limits: Limits, as_invoker: bool) -> int:
    """Tasks that count against RLIMIT_NPROC besides the program's own."""
    if limits.nproc is None or as_invoker:
        return 0
    if iso.mode == "userns":
        return 1  # the worker itself counts in its user namespace
    if iso.mode == "none" and os.getuid() != 0:
        return _user_tasks(os.getuid())  # RLIMIT_NPROC counts all the user's tasks
    return 0


def _write_program(iso: Isolation, cwd: str, python: str) -> str:
    py_path = os.path.join(cwd, "prog.py")
    if not os.path.exists(py_path):
        with open(py_path, "w") as f:
            f.write(python)
        chown_tree(iso, cwd)
    return py_path


def _child(
    iso: Isolation,
    cwd: str,
    limits: Limits,
    as_invoker: bool,
    pipes: tuple[int, int],
    nproc_extra: int,
    argv: list[str] | None,
    python: str | None,
    py_path: str | None,
    env: dict[str, str],
) -> None:
    """The forked child: sandbox itself, then exec the program. Never returns."""
    rc = 126
    try:
        _child_setup(iso, cwd, limits, as_invoker, pipes[0], pipes[1], nproc_extra)
        if argv is not None:
            try:
                os.execve(argv[0], argv, env)
            except OSError as e:
                os.write(2, f"sandbox: cannot execute {argv[0]}: {e}\n".encode())
                rc = 127
        else:
            rc = _exec_python(python, py_path, env)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(2, f"sandbox: setup failed: {e!r}\n".encode())
        except OSError:
            pass
    os._exit(rc)


class _Capture:
    """Reads a child's stdout/stderr until it exits (plus a short drain), times out, or prints too much."""

    def __init__(self, pid: int, out_r: int, err_r: int, max_output: int, kill_output: int):
        self.pid, self.out_r, self.err_r = pid, out_r, err_r
        self.max_output, self.kill_output = max_output, kill_output
        self.bufs = {out_r: bytearray(), err_r: bytearray()}
        self.total = 0
        self.status = None
        self.timed_out = self.output_limited = False
        self.poller = select.poll()
        for fd in self.bufs:
            os.set_blocking(fd, False)
            self.poller.register(fd, select.POLLIN)
        try:
            self.pidfd = os.pidfd_open(pid)  # readable when the child exits: no polling loop
            self.poller.register(self.pidfd, select.POLLIN)
        except (AttributeError, OSError):
            self.pidfd = None
        self.open_fds = set(self.bufs)
        self.exit_grace = 0.0  # after the child exits, wait briefly for the pipes to drain

    def run(self, deadline: float) -> None:
        while True:
            now = time.monotonic()
            if self.status is None and now >= deadline:
                self.timed_out = True
                return
            if self.status is not None and (not self.open_fds or now >= self.exit_grace):
                return
            wait = (deadline if self.status is None else self.exit_grace) - now
            if self.pidfd is None and self.status is None:
                wait = min(wait, 0.005)
            for fd, _ in self.poller.poll(max(wait, 0) * 1000):
                if fd != self.pidfd:
                    self._read(fd)
            if self.total > self.kill_output:
                self.output_limited = True
                return
            self._reap()

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.poller.unregister(fd)
            self.open_fds.discard(fd)
            return
        self.total += len(chunk)
        room = self.max_output - len(self.bufs[fd])
        if room > 0:
            self.bufs[fd] += chunk[:room]

    def _reap(self) -> None:
        if self.status is not None:
            return
        p, st = os.waitpid(self.pid, os.WNOHANG)
        if p:
            self.status = st
            self.exit_grace = time.monotonic() + 0.2
            if self.pidfd is not None:
                self.poller.unregister(self.pidfd)

    def text(self, fd: int) -> str:
        b = self.bufs[fd]
        s = b.decode("utf-8", errors="replace")
        return s + "\n...[truncated]" if len(b) >= self.max_output else s

    def close(self) -> None:
        for fd in (*self.bufs, *([self.pidfd] if self.pidfd is not None else [])):
            os.close(fd)


def _cleanup(iso: Isolation, cap: _Capture, as_invoker: bool) -> None:
    """Kill the group, any orphan (we are their subreaper), and if anything was left behind, every
    process of the sandbox uid; reap the child if it has not been."""
    try:
        os.killpg(cap.pid, signal.SIGKILL)
        group_alive = True
    except (ProcessLookupError, PermissionError):
        group_alive = False
    if cap.status is None:
        try:
            _, cap.status = os.waitpid(cap.pid, 0)
        except ChildProcessError:
            cap.status = None
    leftovers = _sweep()
    if iso.mode == "uid" and not as_invoker and (cap.timed_out or cap.output_limited or group_alive or leftovers):
        kill_uid(iso.uid, iso.gid)
        _sweep()


def _exit_of(status: int | None) -> tuple[int | None, int | None]:
    """(returncode, signal) of a wait status."""
    if status is None:
        return None, None
    code = os.waitstatus_to_exitcode(status)
    return (code, None) if code >= 0 else (None, -code)


def run(
    iso: Isolation,
    cwd: str,
    *,
    argv: list[str] | None = None,
    python: str | None = None,
    env: dict[str, str],
    timeout_s: float,
    limits: Limits,
    as_invoker: bool = False,
    max_output: int = 32 * 1024,
    kill_output: int = 8 * MiB,
) -> StepResult:
    """Run one step: exec ``argv`` (argv[0] an absolute path) or exec ``python`` source."""
    assert (argv is None) != (python is None)
    nproc_extra = _nproc_extra(iso, limits, as_invoker)
    py_path = _write_program(iso, cwd, python) if python is not None else None
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(iso, cwd, limits, as_invoker, (out_w, err_w), nproc_extra, argv, python, py_path, env)
    os.close(out_w)
    os.close(err_w)
    cap = _Capture(pid, out_r, err_r, max_output, kill_output)
    cap.run(start + timeout_s)
    duration = time.monotonic() - start
    _cleanup(iso, cap, as_invoker)
    stdout, stderr = cap.text(out_r), cap.text(err_r)
    cap.close()
    rc, sig = _exit_of(cap.status)
    return StepResult(
        returncode=rc,
        signal=sig,
        timed_out=cap.timed_out,
        output_limited=cap.output_limited,
        stdout=stdout,
        stderr=stderr,
        duration_s=round(duration, 4),
    )


def describe_signal(sig: int | None) -> str:
    if sig is None:
        return ""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


__all__ = [
    "GiB",
    "MiB",
    "Isolation",
    "Limits",
    "StepResult",
    "isolate_worker",
    "make_scratch",
    "remove_scratch",
    "run",
    "kill_uid",
    "describe_signal",
]
