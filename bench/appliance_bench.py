#!/usr/bin/env python3
"""The appliance's figures: image size, boot to first SMTP greeting, idle
memory, and relay throughput under QEMU next to ringwayd run directly on
this machine, in the same run.

    bench/appliance_bench.py BUILD_DIR IMAGE_DIR [--runs 3] [--seconds 20] [--accel tcg|kvm] [--memory MIB]

IMAGE_DIR holds ringway.img (image/build). Both gateways relay to a
ringway-sink on this machine: the appliance reaches it through QEMU's user
network (10.0.2.2), the host's ringwayd on loopback. ringway-load sends to
each in turn (alternating, RUNS times, SECONDS each, 8 connections, 4 KiB
messages, connection reuse) and the medians and their ratio are printed.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "image"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from appliance import Appliance  # noqa: E402
import sink_test  # noqa: E402
from ringway_harness import Ringwayd, wait_until  # noqa: E402


def load(build, port, seconds):
    r = subprocess.run([os.path.join(build, "bench", "ringway-load"), "-s", f"127.0.0.1:{port}", "-c", "8",
                        "--per-conn", "0", "-d", f"{seconds}s", "--to", "u{n}@sink.test", "--json", "-q"],
                       capture_output=True, text=True, timeout=seconds + 120)
    if r.returncode != 0:
        raise SystemExit(f"ringway-load failed: {r.stderr}")
    rep = json.loads(r.stdout)
    return rep["msg_per_s"], rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("image_dir")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--accel", default=os.environ.get("RINGWAY_QEMU_ACCEL", "tcg"))
    ap.add_argument("--memory", type=int, default=1024, help="the appliance's memory, MiB")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    sink_test.BUILD = build
    os.environ["RINGWAY_QEMU_ACCEL"] = a.accel
    work = tempfile.mkdtemp(prefix="rw_appbench_")
    out = {"accel": a.accel}
    src = os.path.join(a.image_dir, "ringway.img")
    out["image_raw_mib"] = round(os.path.getsize(src) / 2**20, 1)
    out["image_allocated_mib"] = round(os.stat(src).st_blocks * 512 / 2**20, 1)
    qcow = os.path.join(a.image_dir, "ringway.qcow2")
    if os.path.exists(qcow):
        out["image_qcow2_mib"] = round(os.path.getsize(qcow) / 2**20, 1)
    bundle = os.path.join(a.image_dir, "ringway.bundle")
    if os.path.exists(bundle):
        out["root_slot_bundle_mib"] = round(os.path.getsize(bundle) / 2**20, 1)

    sink = sink_test.Sink(listen="127.0.0.1:0")
    img = os.path.join(work, "ringway.img")
    subprocess.run(["cp", "--sparse=always", src, img], check=True)
    key = os.path.join(work, "key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    with open(key + ".pub") as f:
        pub = f.read().strip()
    seed = os.path.join(work, "seed.toml")
    with open(seed, "w") as f:
        f.write(f'hostname = "bench.appliance.test"\n[admin]\nssh_keys = ["{pub}"]\n'
                f'[mail]\naccepted_domains = ["sink.test"]\ninternal_server = "10.0.2.2:{sink.port}"\n'
                # The load comes from the host, 10.0.2.2 inside: a relay network,
                # as 127.0.0.0/8 is for the host's ringwayd, so neither gateway
                # applies its per-client rate limits to it.
                f'relay_networks = ["10.0.2.0/24"]\n')
    subprocess.run([os.path.join(REPO, "image", "seed"), img, seed], check=True, capture_output=True)
    app = Appliance(img, work)
    app.ssh_key = key
    host = None
    try:
        app.boot(memory=a.memory)
        out["first_boot_to_greeting_s"] = round(app.wait_greeting(), 1)
        wait_until(lambda: app.ssh("status").returncode == 0, timeout=300, what="SSH")
        app.power_button()
        app.boot(memory=a.memory)
        out["boot_to_greeting_s"] = round(app.wait_greeting(), 1)
        wait_until(lambda: app.ssh("status").returncode == 0, timeout=300, what="SSH")
        time.sleep(20)  # idle: first-boot work done, nothing flowing
        st = json.loads(app.ssh("--json", "status").stdout)
        mem = st["gauges"]["system_memory"]
        out["idle_memory_used_mib"] = round((mem["total_bytes"] - mem["available_bytes"]) / 2**20, 1)
        out["idle_memory_total_mib"] = round(mem["total_bytes"] / 2**20, 1)
        out["idle_page_cache_mib"] = round(mem.get("cached_bytes", 0) / 2**20, 1)
        out["idle_ringwayd_rss_mib"] = round(st["gauges"]["memory_rss_bytes"] / 2**20, 1)

        host = Ringwayd(build, relay_networks='["127.0.0.0/8"]',
                        tail=f'[[route]]\ndomain = "sink.test"\nhosts = ["127.0.0.1:{sink.port}"]\n')
        vm_rates, host_rates = [], []
        for i in range(a.runs):
            r, _ = load(build, app.smtp_port, a.seconds)
            vm_rates.append(r)
            r, _ = load(build, host.port, a.seconds)
            host_rates.append(r)
            sys.stderr.write(f"run {i + 1}: appliance {vm_rates[-1]:.0f}/s, host {host_rates[-1]:.0f}/s\n")
        out["relay_appliance_msgs_per_s"] = [round(x) for x in vm_rates]
        out["relay_host_msgs_per_s"] = [round(x) for x in host_rates]
        vm, h = statistics.median(vm_rates), statistics.median(host_rates)
        out["relay_appliance_median"] = round(vm)
        out["relay_host_median"] = round(h)
        out["host_over_appliance"] = round(h / vm, 1) if vm else None
    finally:
        app.stop()
        if host:
            host.stop()
            host.cleanup()
        sink.cleanup()
        shutil.rmtree(work, True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
