#!/usr/bin/env python3
"""Rules the `*.test.yaml` runner cannot express (Appendix A.16 old events, A.17 duplicate
ids, A.18 rejected lines, 6.2 the consent ledger ordered by `at`), checked through
`rapport run` on JSONL.

    python3 tests/scenarios/run/check.py [--rapport PATH]

Each case in cases.yaml gives `events` (JSON objects, or strings written as they are, to
make broken lines), `expect` (the exact ordered list of actions; each a partial object:
only the fields given are compared; a string value /.../ is a regex), and optionally
`audit` (partial records that must appear in this order), `stderr` (substrings that must
appear in this order) and `exit` (default 0). Every case runs on a fresh engine against
the bundle of tests/scenarios. Exit 1 when a case fails.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(PROJECT))


def matches(expected, actual):
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) if v is not None else actual.get(k) is None
            for k, v in expected.items()
        )
    if isinstance(expected, str) and len(expected) >= 2 and expected.startswith("/") and expected.endswith("/"):
        text = actual if isinstance(actual, str) else json.dumps(actual)
        return re.search(expected[1:-1], text) is not None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return expected == actual
    return str(expected) == (actual if isinstance(actual, str) else json.dumps(actual))


def in_order(expected, actual):
    i = 0
    for e in expected:
        while i < len(actual) and not matches(e, actual[i]):
            i += 1
        if i == len(actual):
            return e
        i += 1
    return None


def main():
    rapport = os.path.join(ROOT, "target", "debug", "rapport")
    if "--rapport" in sys.argv:
        rapport = sys.argv[sys.argv.index("--rapport") + 1]
    with open(os.path.join(HERE, "cases.yaml")) as f:
        cases = yaml.safe_load(f)["cases"]
    tmp = tempfile.mkdtemp()
    bundle = os.path.join(tmp, "bundle.json")
    b = subprocess.run([rapport, "build", PROJECT, "-o", bundle], capture_output=True, text=True)
    if b.returncode != 0:
        print(b.stderr)
        sys.exit(2)
    passed = failed = 0
    for case in cases:
        lines = [e if isinstance(e, str) else json.dumps(e) for e in case["events"]]
        events = os.path.join(tmp, "events.jsonl")
        audit_path = os.path.join(tmp, "audit.jsonl")
        with open(events, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = subprocess.run(
            [rapport, "run", "--bundle", bundle, "--events", events, "--audit", audit_path],
            capture_output=True, text=True,
        )
        actions = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        with open(audit_path) as f:
            audit = [json.loads(l) for l in f if l.strip()]
        problems = []
        if r.returncode != case.get("exit", 0):
            problems.append(f"exit status {r.returncode}, expected {case.get('exit', 0)}")
        exp = case.get("expect", [])
        if len(exp) != len(actions) or not all(matches(e, a) for e, a in zip(exp, actions)):
            problems.append(
                "actions differ\n      expected:\n"
                + "".join(f"        {json.dumps(e, ensure_ascii=False)}\n" for e in exp)
                + "      actual:\n"
                + "".join(f"        {json.dumps(a, ensure_ascii=False)}\n" for a in actions)
            )
        missing = in_order(case.get("audit", []), audit)
        if missing is not None:
            problems.append(f"audit record {json.dumps(missing)} not found in order")
        pos = 0
        for s in case.get("stderr", []):
            i = r.stderr.find(s, pos)
            if i < 0:
                problems.append(f"stderr lacks {s!r} (in order); stderr was:\n{r.stderr}")
                break
            pos = i + len(s)
        if problems:
            failed += 1
            print(f"FAILED  run/cases.yaml › {case['name']}")
            for p in problems:
                print("    " + p)
        else:
            passed += 1
            print(f"ok      run/cases.yaml › {case['name']}")
    print(f"\nrun result: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
