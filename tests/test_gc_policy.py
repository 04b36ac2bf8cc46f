"""The server's garbage collection policy, applied in a process of its own (it changes process-wide state)."""

import subprocess
import sys
import textwrap


def test_settling_freezes_start_up_and_raises_the_young_threshold_only() -> None:
    script = textwrap.dedent("""
        import gc
        from phonefleet import gc_policy
        from phonefleet.server import app
        before = gc.get_threshold()
        gc_policy.settle_after_start()
        after = gc.get_threshold()
        assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
        assert after == (gc_policy.GEN0_THRESHOLD, before[1], before[2]), (before, after)
        assert gc.isenabled()
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
