#!/usr/bin/env python3
"""`docqa version`'s "cpu kernels" line against what this CPU has (/proc/cpuinfo's flags, which
Linux shows only for the features the kernel saves and lets a process use) and against each
DOCQA_CPU_NO_* switch, which must take the kernel off and every kernel built on it.

    test_version.py DOCQA
"""
import os
import subprocess
import sys

# Each kernel: the flags it needs, and the kernel it builds on (off when that one is).
KERNELS = [
    ("avx2+fma", {"avx2", "fma"}, None, "DOCQA_CPU_NO_AVX2"),
    ("avx512", {"avx512f"}, "avx2+fma", "DOCQA_CPU_NO_AVX512"),
    ("avx512-bf16", {"avx512_bf16"}, "avx512", "DOCQA_CPU_NO_AVX512BF16"),
    ("amx-bf16", {"amx_bf16", "amx_tile"}, "avx512-bf16", "DOCQA_CPU_NO_AMX"),
    ("avx512-vnni", {"avx512_vnni", "avx512bw", "avx512vl"}, "avx512", "DOCQA_CPU_NO_AVX512VNNI"),
]
PORTABLE = "portable C (AVX2+FMA absent or switched off)"


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def expected(flags, off):
    on = []
    for name, need, base, switch in KERNELS:
        if need <= flags and (base is None or base in on) and switch not in off:
            on.append(name)
    return " ".join(on) if on else PORTABLE


def kernels_line(docqa, off):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_CPU_NO_")}
    env.update({s: "1" for s in off})
    out = subprocess.run([docqa, "version"], env=env, capture_output=True, text=True, check=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("cpu kernels: ")]
    if len(lines) != 1:
        sys.exit(f"FAIL: `docqa version` printed {len(lines)} 'cpu kernels:' lines:\n{out.stdout}")
    return lines[0][len("cpu kernels: "):]


def main():
    docqa = sys.argv[1]
    flags = cpu_flags()
    failed = 0
    cases = [()] + [(switch,) for _, _, _, switch in KERNELS]
    for off in cases:
        want, got = expected(flags, off), kernels_line(docqa, off)
        ok = want == got
        failed += not ok
        print(f"{'ok' if ok else 'FAIL'}: {' '.join(off) or 'no switch'}: {got!r}"
              + ("" if ok else f", expected {want!r}"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
