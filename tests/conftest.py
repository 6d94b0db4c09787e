"""Shared pytest setup for the test suite.

The whole suite runs in a fresh network namespace that has only loopback (DESIGN.md): Ray and the
planner service then bind 127.0.0.1, nothing collides with another Ray on the machine, and a green
run proves the suite needs no network. Where a namespace cannot be made (no root and no user
namespaces) the suite runs as it is and says so. LLMREC_TEST_NETNS=0 turns the isolation off.
"""

import os
import subprocess
import sys

# The tests directory has no __init__.py; putting it on sys.path lets tests import their helper
# modules (`from netns import loopback_only`) whatever rootdir or import mode pytest runs with.
_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import pytest  # noqa: E402
import torch  # noqa: E402

from netns import loopback_only, netns_available  # noqa: E402

_NETNS_ENV = "LLMREC_TEST_NETNS"


def pytest_cmdline_main(config):
    """Re-run this same pytest command inside a loopback-only namespace, once."""
    if os.environ.get(_NETNS_ENV) in ("0", "inside"):
        return None
    if not netns_available():
        print("note: no loopback-only network namespace available here; tests run in the host network",
              file=sys.stderr)
        return None
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    print("running the test suite in a loopback-only network namespace", file=sys.stderr, flush=True)
    env = {**os.environ, _NETNS_ENV: "inside"}
    cmd = loopback_only([sys.executable, "-m", "pytest", *config.invocation_params.args])
    return subprocess.run(cmd, cwd=config.invocation_params.dir, env=env).returncode


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: one intra-op thread is far faster than two fighting over a busy 2-core box.
    Restored afterwards, also for code under test that sets its own (workers, learners)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for one test module, bound to 127.0.0.1, shut down after it."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()
