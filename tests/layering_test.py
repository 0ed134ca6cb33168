#!/usr/bin/env python3
"""Dependencies point one way: admin -> mta -> {policy, fs}, policy -> mail,
{mail, fs} -> runtime, and
bench -> {fs, runtime}. Two checks:

1. Every #include "LAYER/..." in a layer's sources names that layer or one
   below it (and none climbs out with "../"): the rule, read from the text.
2. The build enforces it: with the compile command of a source file of each
   layer (from compile_commands.json), a header of every layer it may not
   use is not found, while one of every layer it may use compiles; and no
   compile command puts the source root itself on the include path.

    layering_test.py BUILD_DIR SOURCE_DIR
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

ALLOWED = {
    "runtime": {"runtime"},
    "fs": {"fs", "runtime"},
    "mail": {"mail", "runtime"},
    "policy": {"policy", "mail", "runtime"},
    "mta": {"mta", "fs", "policy", "mail", "runtime"},
    "admin": {"admin", "mta", "fs", "policy", "mail", "runtime"},
    # The load tools see runtime, and policy's DKIM signing for
    # ringway-load --dkim-key; micro-benchmarks add the layer they measure
    # (spool_bench: fs; dkim_bench: policy and mail).
    "bench": {"bench", "fs", "policy", "mail", "runtime"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def sources(src, layer, exts=(".cc", ".hh")):
    for d, _, names in os.walk(os.path.join(src, layer)):
        for n in sorted(names):
            if n.endswith(exts):
                yield os.path.join(d, n)


def text_violations(src):
    bad = []
    for layer, allowed in ALLOWED.items():
        for path in sources(src, layer):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for m in INCLUDE.finditer(text):
                inc = m.group(1)
                line = text.count("\n", 0, m.start()) + 1
                top = inc.split("/", 1)[0]
                where = f"{os.path.relpath(path, src)}:{line}: #include \"{inc}\""
                if inc.startswith("../") or "/../" in inc:
                    bad.append(f"{where} climbs out of its include root")
                elif top in ALLOWED and top not in allowed:
                    bad.append(f"{where}: {layer} may use {', '.join(sorted(allowed))}, not {top}")
    return bad


def command_of(entry):
    args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
    out, skip = [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in ("-o", "-c", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if a in ("-MD", "-MMD") or a == entry["file"] or os.path.basename(a) == "ccache":
            continue
        out.append(a)
    return out


def compiles(cmd, directory, header):
    with tempfile.TemporaryDirectory() as d:  # outside the tree: no directory of the includer to search
        probe = os.path.join(d, "probe.cc")
        with open(probe, "w") as f:
            f.write(f'#include "{header}"\n')
        p = subprocess.run(cmd + ["-fsyntax-only", probe], cwd=directory, capture_output=True, text=True,
                           timeout=300)
        return p.returncode == 0, p.stderr


def main():
    build, src = os.path.realpath(sys.argv[1]), os.path.realpath(sys.argv[2])
    failures = text_violations(src)

    with open(os.path.join(build, "compile_commands.json")) as f:
        db = json.load(f)
    for e in db:
        cmd = command_of(e)
        for i, a in enumerate(cmd):
            inc = a[2:] if a.startswith("-I") and len(a) > 2 else (cmd[i + 1] if a in ("-I", "-isystem") else None)
            if inc and os.path.realpath(os.path.join(e["directory"], inc)) == src:
                failures.append(f"{os.path.relpath(e['file'], src)} is compiled with the source root on its "
                                f"include path ({a}): every layer's headers are visible to it")
                break

    # One header of each layer, and one library source of each layer whose
    # compile command stands for the layer's own include roots.
    header = {}
    for layer in ALLOWED:
        hs = sorted(os.path.relpath(p, src) for p in sources(src, layer, (".hh",)))
        header[layer] = next(h for h in hs if "/" in h)
    lib_dir = {"runtime": "runtime/", "fs": "fs/", "mail": "mail/", "policy": "policy/", "mta": "mta/", "admin": "admin/",
               "bench": "bench/lib/"}
    probed = 0
    for layer, allowed in ALLOWED.items():
        entry = next((e for e in db if os.path.relpath(os.path.realpath(e["file"]), src).startswith(lib_dir[layer])
                      and "header_check" not in e["file"]), None)
        if entry is None:
            failures.append(f"no compile command for a source of {layer} in compile_commands.json")
            continue
        cmd = command_of(entry)
        # bench/lib links the runtime alone (spool_bench adds fs, dkim_bench
        # policy, themselves).
        sees = {"bench", "runtime"} if layer == "bench" else allowed
        for other in ALLOWED:
            if other in allowed and other not in sees:
                continue
            ok, err = compiles(cmd, entry["directory"], header[other])
            probed += 1
            if other in allowed and not ok:
                failures.append(f"{layer} cannot include {header[other]}, which it may use:\n{err[-2000:]}")
            elif other not in allowed:
                if ok:
                    failures.append(f"{layer} compiles with #include \"{header[other]}\": the build lets it "
                                    f"reach {other}")
                elif "No such file" not in err:
                    failures.append(f"{layer} including {header[other]} failed, but not for want of the file:"
                                    f"\n{err[-2000:]}")
    if failures:
        print("\n".join(failures))
        return 1
    print(f"layering: includes of {len(ALLOWED)} layers follow the rule; {probed} compile probes agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
