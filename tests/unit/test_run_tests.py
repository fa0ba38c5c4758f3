"""scripts/run-tests.sh (what `make test` and CI run) cannot go green by skipping: a tier whose every test skipped
fails with the reasons, the kernel tier skipping on a machine with QEMU fails with its reason, and only an explicit
CHAOS_INJECT_ALLOW_SKIP=1 turns those into a stated SKIPPED. Run on tiny stand-in tiers (env overrides)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run-tests.sh"

PASSING = "def test_passes():\n    assert 1 + 1 == 2\n"
SKIPPING = ("import pytest\n\n@pytest.mark.skip(reason='needs a thing this machine lacks')\n"
            "def test_skipped():\n    raise AssertionError('never runs')\n")
XFAILING = ("import pytest\n\n@pytest.mark.xfail(reason='known broken', strict=False)\n"
            "def test_xfails():\n    raise AssertionError('broken')\n")
FAILING = "def test_fails():\n    assert 1 + 1 == 3\n"


@pytest.fixture
def tiers(tmp_path):
    (tmp_path / "passing").mkdir()
    (tmp_path / "passing" / "test_ok.py").write_text(PASSING)
    (tmp_path / "skipping").mkdir()
    (tmp_path / "skipping" / "test_skip.py").write_text(SKIPPING)
    (tmp_path / "xfailing").mkdir()
    (tmp_path / "xfailing" / "test_xfail.py").write_text(XFAILING)
    (tmp_path / "failing").mkdir()
    (tmp_path / "failing" / "test_fail.py").write_text(FAILING)
    (tmp_path / "empty").mkdir()   # pytest collects nothing: exit 5
    kernel = tmp_path / "kernel-tier.sh"
    kernel.write_text("echo 'kernel tier skipped: no kernel image for this test'\nexit 77\n")
    vms = tmp_path / "vms-tier.sh"   # stands for scripts/vms-tier.sh (setup + box, then pytest on its arguments)
    vms.write_text(f'exec "{ROOT / ".venv" / "bin" / "python"}" -m pytest "$@" -q -ra -p no:cacheprovider\n')
    return tmp_path


def run(tiers: Path, *, unit="passing", host="passing", fleet="passing", vms="passing", qemu="sh", allow=None):
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv (make setup): run-tests.sh runs the tiers with it")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAOS_INJECT_", "KERNEL_SERIES"))}
    env.update(CHAOS_INJECT_TIER_UNIT=str(tiers / unit), CHAOS_INJECT_TIER_HOST=str(tiers / host),
               CHAOS_INJECT_TIER_FLEET=str(tiers / fleet),
               CHAOS_INJECT_KERNEL_TIER=str(tiers / "kernel-tier.sh"), CHAOS_INJECT_QEMU=qemu,
               CHAOS_INJECT_VMS_TIER=str(tiers / "vms-tier.sh"), CHAOS_INJECT_TIER_VMS=str(tiers / vms),
               CHAOS_INJECT_TEST_LOGS=str(tiers / "logs"),   # not .cache/test-logs: `make test` may be writing there
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if allow is not None:
        env["CHAOS_INJECT_ALLOW_SKIP"] = allow
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    summary = proc.stdout.split("=== summary")[-1]
    assert sorted(p.name for p in (tiers / "logs").iterdir()) == ["fleet.log", "host.log", "kernel-6.1.log",
                                                                     "unit.log", "vms-smoke.log"]
    return proc.returncode, summary


def test_a_tier_that_only_skipped_fails_with_its_reason(tiers):
    code, summary = run(tiers, host="skipping", qemu="no-such-qemu-binary")
    assert code == 1, summary
    assert "unit: 1 passed" in summary
    assert "host: FAILED: every test skipped" in summary and "needs a thing this machine lacks" in summary
    assert "kernel-6.1: SKIPPED: kernel tier skipped: no kernel image for this test" in summary   # no QEMU here


def test_the_kernel_tier_skipping_where_qemu_is_fails(tiers):
    code, summary = run(tiers, qemu="sh")   # `sh` stands for a QEMU binary that is on PATH
    assert code == 1, summary
    assert "kernel-6.1: FAILED: could not run on a machine that has QEMU" in summary
    assert "no kernel image for this test" in summary
    assert "unit: 1 passed" in summary and "host: 1 passed" in summary


def test_allow_skip_states_the_skips_and_passes(tiers):
    code, summary = run(tiers, unit="skipping", qemu="sh", allow="1")
    assert code == 0, summary
    assert "unit: SKIPPED (allowed by CHAOS_INJECT_ALLOW_SKIP=1): every test skipped" in summary
    assert "kernel-6.1: SKIPPED (allowed by CHAOS_INJECT_ALLOW_SKIP=1): could not run" in summary


def test_all_passing_tiers_pass(tiers):
    code, summary = run(tiers, qemu="no-such-qemu-binary")
    assert code == 0, summary
    assert "fleet: 1 passed" in summary and "tests: 4 passed, 0 failed, 0 skipped" in summary


def test_the_vms_smoke_tier_cannot_pass_by_skipping(tiers):
    code, summary = run(tiers, vms="skipping", qemu="no-such-qemu-binary")
    assert code == 1, summary
    assert "vms-smoke: FAILED: every test skipped" in summary and "needs a thing this machine lacks" in summary


def test_a_tier_that_collected_no_test_fails(tiers):
    """pytest's exit 5 (no tests collected: a wrong path, a marker that deselects all) fails the run, even with
    CHAOS_INJECT_ALLOW_SKIP=1: it is no skip a machine can excuse."""
    for allow in (None, "1"):
        code, summary = run(tiers, host="empty", qemu="no-such-qemu-binary", allow=allow)
        assert code == 1, summary
        assert "host: FAILED: no tests collected (pytest exit 5)" in summary
        assert "unit: 1 passed" in summary and "fleet: 1 passed" in summary


def test_a_tier_that_passed_nothing_fails(tiers):
    """Exit 0 with no test passed (only xfailed ones here) is no pass either."""
    code, summary = run(tiers, fleet="xfailing", qemu="no-such-qemu-binary")
    assert code == 1, summary
    assert "fleet: FAILED: no test passed (1 xfailed" in summary


def test_a_failing_tier_fails_the_run_and_the_others_still_run(tiers):
    code, summary = run(tiers, unit="failing", qemu="no-such-qemu-binary")
    assert code == 1, summary
    assert "unit: FAILED (exit 1): 1 failed" in summary
    assert "host: 1 passed" in summary and "fleet: 1 passed" in summary and "vms-smoke: 1 passed" in summary
    assert "tests: 3 passed, 1 failed, 0 skipped" in summary


if sys.platform != "linux":   # pragma: no cover - the script is bash for Debian
    pytestmark = pytest.mark.skip(reason="run-tests.sh targets Linux")
