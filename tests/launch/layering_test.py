#!/usr/bin/env python3
"""The layering, checked on every #include "..." of the source tree (docs/ARCHITECTURE.md).

Each folder may include only the folders below it (the table). Two seams are stricter:
- the CPU kernels' compute headers are included only by the CPU backend (runtime/backend/cpu/)
  and the kernels themselves: everything above calls the Backend (runtime/backend/ops.h), so a
  CUDA backend is a folder plus one registration, not an edit of every layer;
- cblas.h only inside runtime/kernels/ (and bench/, whose baselines call OpenBLAS directly).
Exit 1 with one line per violation. Usage: layering_test.py SOURCE_DIR
"""
import os
import re
import sys

# folder -> include prefixes it may use (its own folder is always allowed).
ALLOWED = {
    "runtime/core": ["runtime/kernels/math.h"],
    "runtime/kernels": ["runtime/core/"],
    "runtime/backend": ["runtime/core/", "runtime/kernels/"],
    "routers": ["runtime/core/", "runtime/backend/", "runtime/kernels/math.h",
                "runtime/kernels/op_types.h", "runtime/kernels/hash_route.h"],
    "comm": ["runtime/core/"],
    "runtime/moe": ["runtime/core/", "runtime/backend/", "runtime/kernels/", "routers/", "comm/"],
    "runtime/io": ["runtime/core/"],
    "runtime/data": ["runtime/core/", "runtime/io/"],
    "runtime/model": ["runtime/core/", "runtime/backend/", "runtime/kernels/", "routers/",
                      "comm/", "runtime/moe/", "runtime/io/", "runtime/data/"],
    "runtime/report": ["runtime/core/", "routers/", "comm/", "runtime/moe/", "proto/"],
    "runtime/train": ["runtime/core/", "runtime/backend/", "runtime/kernels/", "routers/",
                      "comm/", "runtime/moe/", "runtime/io/", "runtime/data/",
                      "runtime/model/"],
    "runtime/trace": ["runtime/core/", "runtime/io/", "runtime/moe/"],
    "runtime/project": ["runtime/core/", "runtime/kernels/capacity.h", "comm/placement.h",
                        "runtime/trace/"],
}
# The CPU kernels' compute headers (everything in runtime/kernels/ that is not a shared data
# format or per-element code).
SHARED_KERNEL_HEADERS = {"math.h", "quant_math.h", "op_types.h", "quant.h", "capacity.h",
                         "hash_route.h"}
# The CUDA backend includes them for their SY_HD per-row code (norm.h, attention.h, ...), which
# its kernels share with the CPU's.
KERNEL_USERS = ("runtime/kernels/", "runtime/backend/cpu/", "runtime/backend/cuda/", "tests/",
                "bench/", "fuzz/")
CBLAS_USERS = ("runtime/kernels/", "bench/")

INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^>"]+)[>"]')


def folder_of(path):
    for f in sorted(ALLOWED, key=len, reverse=True):
        if path.startswith(f + "/"):
            return f
    return None


def main(root):
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir.startswith(("build", ".git", "data", "out", "models")):
            dirnames[:] = []
            continue
        for name in filenames:
            if not name.endswith((".h", ".cc", ".cu", ".cuh")):
                continue
            path = os.path.normpath(os.path.join(rel_dir, name))
            with open(os.path.join(root, path), encoding="utf-8", errors="replace") as fh:
                for lineno, line in enumerate(fh, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    inc = m.group(2)
                    where = f"{path}:{lineno}: #include {inc}"
                    if inc == "cblas.h" and not path.startswith(CBLAS_USERS):
                        bad.append(where + " (cblas.h belongs to runtime/kernels/)")
                    if m.group(1) != '"':
                        continue
                    if (inc.startswith("runtime/kernels/")
                            and os.path.basename(inc) not in SHARED_KERNEL_HEADERS
                            and not path.startswith(KERNEL_USERS)):
                        bad.append(where + " (CPU kernels: call the Backend, runtime/backend/ops.h)")
                    f = folder_of(path)
                    if f is None or inc.startswith(f + "/"):
                        continue
                    if not any(inc.startswith(a) or inc == a for a in ALLOWED[f]):
                        bad.append(where + f" ({f} may include only {', '.join(ALLOWED[f])})")
    for b in bad:
        print(b)
    print(f"layering: {len(bad)} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
