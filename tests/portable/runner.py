"""Run portable check modules and print one result line per check.

Usage (either runtime): ``python runner.py MODULE [MODULE...]``; each
``check_*`` function of each module is run in definition order. Output
lines are ``PASS module.check``, ``FAIL module.check: Type: message`` and
finally ``DONE passed=N failed=M``; tests/test_portable.py reads them.
"""

import sys


def _checks(mod):
    names = [n for n in dir(mod) if n.startswith("check_")]
    names.sort()
    return names


def run(modnames):
    passed = failed = 0
    for modname in modnames:
        mod = __import__(modname)
        for name in _checks(mod):
            try:
                getattr(mod, name)()
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failed += 1
                msg = str(e).replace("\n", " ")
                print("FAIL %s.%s: %s: %s" % (modname, name, type(e).__name__, msg))
            else:
                passed += 1
                print("PASS %s.%s" % (modname, name))
    print("DONE passed=%d failed=%d" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1:]) else 0)
