"""The sandbox against hostile programs: each must fail (or pass harmlessly) and leave nothing behind.

Every hostile program runs at each isolation level that works here (bwrap, unshare); a level that does not work is
skipped with the reason. Level none gets only harmless programs: `kill -9 -1` as root there takes the machine down.
"""

import ast
import os
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from evals.sandbox import (
    LEVELS,
    SANDBOX_UID,
    SANDBOX_UIDS,
    TAIL_CHARS,
    WALL_FACTOR,
    WALL_SLACK,
    Sandbox,
    SandboxUnavailable,
    detect_isolation,
    execute,
    interpreter,
    why_unavailable,
)

CORRECT = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"


def sandbox_processes() -> set[int]:
    """Processes whose real uid is a sandbox's (as root, every sandboxed program runs as one of SANDBOX_UIDS)."""
    pids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid = int(re.search(r"^Uid:\s+(\d+)", status.read_text(), re.MULTILINE).group(1))
        except (OSError, AttributeError):  # exited meanwhile
            continue
        if uid in SANDBOX_UIDS or uid == SANDBOX_UID:
            pids.add(int(status.parent.name))
    return pids


def processes_mentioning(marker: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            pass
    return pids


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox(request):
    """A sandbox at each working isolation level; afterwards, no process of the sandbox uid may remain."""
    if reason := why_unavailable(request.param):
        pytest.skip(f"isolation level {request.param} is unavailable here: {reason}")
    before = sandbox_processes()
    yield Sandbox(timeout=0.5, memory_mb=512, level=request.param)
    if os.geteuid() == 0:
        assert not sandbox_processes() - before, "processes of the sandbox uid outlived their program"


def test_a_correct_program_passes(sandbox):
    assert sandbox.run(CORRECT).status == "passed"


def test_a_failing_assertion_fails_with_its_reason(sandbox):
    result = sandbox.run(CORRECT + "assert add(2, 2) == 5, 'arithmetic'\n")
    assert not result.passed
    assert result.status == "failed: AssertionError: arithmetic"
    assert "add(2, 2) == 5" in result.stderr  # the traceback shows the program's source


@pytest.mark.parametrize(
    "early_exit",
    [
        "sys.exit(0)",
        "os._exit(0)",
        "exit()",
        "quit()",
        "raise SystemExit(0)",
        "raise SystemExit",
        "os.kill(os.getpid(), 9)",
    ],
)
def test_exiting_before_the_tests_finish_does_not_pass(sandbox, early_exit):
    result = sandbox.run(f"import os, sys\n{early_exit}\nassert False, 'the tests'\n")
    assert not result.passed and result.status.startswith("failed:"), result.status


def test_reading_its_own_source_argv_environment_and_descriptors_does_not_pass(sandbox):
    program = """
import os
seen = [open("/proc/self/cmdline", "rb").read(), open("/proc/self/environ", "rb").read(), os.read(0, 1 << 16)]
for fd in os.listdir("/proc/self/fd"):
    try:
        os.set_blocking(int(fd), False)
        seen.append(os.read(int(fd), 1 << 16))
    except OSError:
        pass
for blob in seen:
    print(blob.decode("utf-8", "replace"))
os._exit(0)
"""
    result = sandbox.run(program)
    assert not result.passed
    assert result.status == "failed: exited before its tests finished (no completion token)"


def test_an_infinite_loop_times_out(sandbox):
    start = time.monotonic()
    assert sandbox.run("while True:\n    pass\n").status == "timed out"
    assert time.monotonic() - start < sandbox.timeout + 3


def test_a_sleeping_program_ignoring_sigterm_and_sigint_times_out_at_the_wall_clock_backstop(sandbox):
    program = "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT):\n    signal.signal(s, signal.SIG_IGN)\n"
    start = time.monotonic()
    assert sandbox.run(program + "while True:\n    time.sleep(0.01)\n", timeout=0.25).status == "timed out"
    assert time.monotonic() - start < WALL_FACTOR * 0.25 + WALL_SLACK + 2


def test_the_time_limit_counts_the_programs_cpu_seconds_not_its_start_up_or_sleep(sandbox):
    busy = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3:\n    pass\n"
    result = sandbox.run(busy, timeout=0.5)
    assert result.passed and 0.3 <= result.cpu_seconds < 0.4, result
    assert sandbox.run("import time\ntime.sleep(1.0)\n", timeout=0.25).passed  # wall 1 s, CPU ~0
    assert sandbox.run(busy, timeout=0.25).status == "timed out"


@pytest.mark.parametrize(
    "ignored, status", [(("SIGPROF",), "timed out"), (("SIGPROF", "SIGXCPU"), "failed: killed by SIGKILL")]
)
def test_a_program_ignoring_the_cpu_limit_signals_is_stopped_by_rlimit_cpu(ignored, status):
    """SIGPROF at the limit; RLIMIT_CPU's SIGXCPU a second after ceil(limit); its SIGKILL one more second later."""
    program = f"import signal\nfor s in {ignored}:\n    signal.signal(getattr(signal, s), signal.SIG_IGN)\n"
    result = Sandbox(timeout=1.0, allow_unsafe=True).run(program + "while True:\n    pass\n")
    assert result.status == status


def test_a_fork_bomb_is_bounded_and_killed_and_leaves_the_program_beside_it_its_processes(sandbox):
    """As root every program has a uid of its own, so the bomb's RLIMIT_NPROC is not the forker's (as non-root, each
    program has a user namespace of its own)."""
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    forker = """
import os, time
time.sleep(0.5)  # the bomb has filled its process limit by now
children = []
for _ in range(50):
    if (pid := os.fork()) == 0:
        os._exit(0)
    children.append(pid)
for child in children:
    os.waitpid(child, 0)
"""
    results = sandbox.run_many([bomb, forker], workers=2, progress=False, timeouts=[0.25, 1.0])
    assert [result.passed for result in results] == [False, True], results[1].stderr
    assert sandbox.run(CORRECT).passed  # the evaluator can still start programs


def test_a_memory_flood_fails_with_memory_error(sandbox):
    result = sandbox.run("hoard = []\nwhile True:\n    hoard.append(bytearray(1 << 24))\n")
    assert result.status == "failed: MemoryError"


@pytest.mark.parametrize("stream", ["sys.stdout", "sys.stderr"])
def test_an_output_flood_is_capped(sandbox, stream):
    result = sandbox.run(f"import sys\nwhile True:\n    {stream}.write('x' * 10000)\n")
    assert result.status == "failed: OSError: [Errno 27] File too large"  # RLIMIT_FSIZE; Python ignores SIGXFSZ
    assert len(result.stdout) <= TAIL_CHARS and len(result.stderr) <= TAIL_CHARS


def test_filling_the_working_directory_stops_at_its_size_cap(sandbox):
    program = "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (1 << 20))\n    i += 1\n"
    assert sandbox.run(program).status.startswith("failed: OSError: [Errno 28] No space left on device")


def test_files_outside_the_working_directory_are_out_of_reach(sandbox, tmp_path, repo_root):
    tmp_path.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim.chmod(0o666)
    targets = [victim, tmp_path / "planted.txt", repo_root / "planted.txt", repo_root / "evals" / "__init__.py"]
    program = f"""
import os
assert os.listdir(".") == [] and os.getcwd() == os.environ["HOME"], "not a fresh empty working directory"
open("mine.txt", "w").write("allowed")
for target in {[str(path) for path in targets]!r}:
    for attempt in (lambda: open(target, "a").write("pwned"), lambda: os.remove(target)):
        try:
            attempt()
            print("CHANGED", target)
        except OSError:
            pass
"""
    result = sandbox.run(program)
    assert result.passed, result.stderr
    assert "CHANGED" not in result.stdout
    assert victim.read_text() == "precious"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["victim.txt"]
    assert not (repo_root / "planted.txt").exists()
    assert sandbox.run("import os\nassert os.listdir('.') == []\n").passed  # the next program starts empty


def test_what_a_program_can_read_is_what_the_docstring_says(sandbox, tmp_path, repo_root):
    """No level shows the caller's temporary files; only bwrap also hides the rest of the host (unshare shows
    world-readable files such as this repository's)."""
    tmp_path.chmod(0o755)
    secret = tmp_path / "secret.txt"
    secret.write_text("precious")
    secret.chmod(0o644)
    targets = [str(secret), str(repo_root / "README.md")]
    program = f"""
for target in {targets!r}:
    try:
        open(target).read(1)
        print("READ", target)
    except OSError:
        pass
"""
    result = sandbox.run(program)
    assert result.passed, result.stderr
    read = [line.removeprefix("READ ") for line in result.stdout.splitlines()]
    assert str(secret) not in read
    hidden_at_unshare = str(repo_root).startswith(("/root/", "/home/", "/tmp/", "/var/tmp/"))
    assert (str(repo_root / "README.md") in read) == (sandbox.level == "unshare" and not hidden_at_unshare), read


def test_the_parents_secrets_are_invisible(sandbox, monkeypatch):
    secret = "phi1-" + secrets.token_hex(16)
    monkeypatch.setenv("PHI1_TEST_SECRET", secret)
    program = """
import os
print(dict(os.environ))
for pid in os.listdir("/proc"):
    for name in ("environ", "cmdline"):
        try:
            print(pid, name, open(f"/proc/{pid}/{name}", "rb").read())
        except OSError:
            pass
"""
    result = sandbox.run(program)
    assert result.passed, result.stderr
    assert "PHI1_TEST_SECRET" not in result.stdout and secret not in result.stdout
    assert str(os.getpid()) + " environ" not in result.stdout


def test_the_network_is_unreachable(sandbox):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        program = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1)
    print("CONNECTED")
except OSError as error:
    print("refused:", error)
"""
        result = sandbox.run(program)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result.passed and "CONNECTED" not in result.stdout


ATTACKS = (
    "os.kill(os.getppid(), signal.SIGKILL)",
    "os.kill(-1, signal.SIGKILL)",
    "os.killpg(0, signal.SIGKILL)",
    "subprocess.run(['kill', '-9', '-1'])",
    "os.kill(1, signal.SIGKILL)",
)


def test_killing_everything_in_reach_harms_neither_the_evaluator_nor_other_programs(sandbox):
    """Every attack at once, each between two programs that are running meanwhile."""
    hostile = "import os, signal, subprocess, time\n{}\ntime.sleep(0.5)\nassert False, 'still alive'\n"
    bystander = "import time\ntime.sleep(1)\n" + CORRECT
    names = ["bystander"] + [name for attack in ATTACKS for name in (attack, "bystander")]
    programs = [bystander if name == "bystander" else hostile.format(name) for name in names]
    results = sandbox.run_many(programs, workers=len(programs), progress=False)
    outcomes = [(name, result.passed) for name, result in zip(names, results, strict=True)]
    assert outcomes == [(name, name == "bystander") for name in names], [result.status for result in results]


def test_a_daemon_dies_with_its_program(sandbox, tmp_path):
    tmp_path.chmod(0o777)
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"  # a sleep duration nothing else uses
    alive = tmp_path / "daemon-was-alive"
    script = f"sleep 1; echo alive > {alive}; exec sleep {marker}"
    program = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["sh", "-c", {script!r}])
    os._exit(0)
os.wait()
def daemon_running():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"{marker}" in open(f"/proc/{{pid}}/cmdline", "rb").read():
                return True
        except OSError:
            pass
    return False
deadline = time.monotonic() + 1.5
while not daemon_running() and time.monotonic() < deadline:
    time.sleep(0.02)
assert daemon_running(), "the daemon never started"
{CORRECT}"""
    result = sandbox.run(program)
    assert result.passed, result.stderr
    assert not processes_mentioning(marker), "the daemon survived its program"
    time.sleep(1.5)
    assert not alive.exists() and not processes_mentioning(marker)


def test_stdin_is_closed(sandbox):
    assert sandbox.run("input()\n").status.startswith("failed: EOFError")


ISOLATED = """
import os, socket
assert os.getuid() != 0
assert [name for _, name in socket.if_nameindex()] == ["lo"]
assert len([pid for pid in os.listdir("/proc") if pid.isdigit()]) < 5
"""


def test_programs_run_unprivileged_without_network_or_host_processes(sandbox):
    assert sandbox.run(ISOLATED).passed


def test_detect_isolation_picks_the_first_level_that_really_isolates():
    def isolates(level: str) -> bool:
        try:
            return execute(ISOLATED, level, 10.0, 512).passed
        except OSError:  # its tools are not installed
            return False

    working = [level for level in LEVELS[:-1] if isolates(level)]
    assert detect_isolation() == (working[0] if working else "none")


def test_a_level_whose_tools_are_missing_is_passed_over(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, unshare or setpriv
    why_unavailable.cache_clear()
    try:
        assert why_unavailable("bwrap").startswith("bwrap") and "not found" in why_unavailable("bwrap")
        assert detect_isolation() == "none"
        with pytest.raises(SandboxUnavailable, match="bwrap: bwrap"):
            Sandbox()
    finally:
        why_unavailable.cache_clear()


def test_a_memory_limit_too_small_for_python_is_refused():
    with pytest.raises(ValueError, match="memory limit of 1 MB is too little to run Python programs"):
        Sandbox(memory_mb=1, allow_unsafe=True)
    assert Sandbox(memory_mb=256, allow_unsafe=True).run(CORRECT).passed


def test_level_none_is_refused_unless_the_caller_accepts_the_risk():
    with pytest.raises(SandboxUnavailable, match="allow_unsafe=True"):
        Sandbox(level="none")


def test_level_none_still_grades_by_the_completion_token():
    sandbox = Sandbox(timeout=5.0, level="none", allow_unsafe=True)
    results = sandbox.run_many([CORRECT, "import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"], progress=False)
    assert [result.passed for result in results] == [True, False, False]


def test_bad_settings_are_rejected_by_name():
    with pytest.raises(ValueError, match="level"):
        Sandbox(level="docker")
    with pytest.raises(ValueError, match="timeout"):
        Sandbox(timeout=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Sandbox(memory_mb=-1)


def test_run_many_returns_results_in_the_order_of_the_programs():
    programs = [CORRECT if i % 3 else "assert False\n" for i in range(12)]
    results = Sandbox(allow_unsafe=True).run_many(programs, workers=4, progress=False)
    assert [result.passed for result in results] == [bool(i % 3) for i in range(12)]


def test_the_runner_loads_almost_nothing_beyond_the_interpreters_start_up():
    """Start-up is most of the cost of a run: a module the runner imports (os is ~2 ms) is paid by every program."""
    show_modules = "import sys\nprint(sorted(sys.modules))\n"
    bare = subprocess.run([interpreter(), "-I", "-S", "-c", show_modules], capture_output=True, text=True, check=True)
    result = Sandbox(level="none", allow_unsafe=True).run(show_modules)
    assert result.passed, result.stderr
    assert set(ast.literal_eval(result.stdout)) - set(ast.literal_eval(bare.stdout)) <= {"resource", "__program__"}
