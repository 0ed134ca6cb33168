#!/usr/bin/env python3
"""Golden SMTP dialogues: tests/data/smtp/NAME.in holds client lines (one
command a line; lines starting with '>' are DATA lines sent without reading
a reply; '#' comments), NAME.ref the expected replies. Host names and queue
ids are masked, then compared with a diff. `--update` rewrites the .ref files.

    golden_test.py BUILD_DIR [--update]
"""
import difflib
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ringway_harness import Raw, Ringwayd  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "smtp")


def mask(line):
    line = re.sub(r"queued as [0-9A-F]{16}", "queued as <MID>", line)
    return line


def run_dialogue(port, path):
    out = []
    r = Raw(port, "127.0.0.1")
    out.append(mask(r.reply()[1][0]))
    data_lines = []
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if not l.startswith("#")]
    for l in lines:
        if l.startswith(">"):
            data_lines.append(l[1:])
            if l[1:] == ".":
                r.send("".join(x + "\r\n" for x in data_lines))
                data_lines = []
                code, rl = r.reply()
                out += ["    " + mask(x) for x in rl]
            continue
        out.append(">>> " + l)
        r.send(l + "\r\n")
        try:
            code, rl = r.reply()
        except ConnectionError:
            out.append("(closed)")
            break
        out += ["    " + mask(x) for x in rl]
        if code == 221 or code == 421:
            break
    r.close()
    return out


def main():
    build = os.path.abspath(sys.argv[1])
    update = "--update" in sys.argv
    d = Ringwayd(build, listener_extra="max_errors = 10\nmax_recipients = 50\n")
    failed = 0
    try:
        for path in sorted(glob.glob(os.path.join(DATA, "*.in"))):
            ref = path[:-3] + ".ref"
            got = run_dialogue(d.port, path)
            if update:
                with open(ref, "w") as f:
                    f.write("\n".join(got) + "\n")
                print("updated", os.path.basename(ref))
                continue
            with open(ref) as f:
                want = f.read().splitlines()
            if got != want:
                failed += 1
                print(f"FAIL {os.path.basename(path)}")
                sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(want, got, "expected", "got", lineterm=""))
            else:
                print(f"ok   {os.path.basename(path)}")
    finally:
        d.cleanup()
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
