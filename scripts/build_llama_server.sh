#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and `llama-batched-bench` offline, from the llama.cpp source that
# the pinned llama-cpp-python release vendors (its source distribution on PyPI), so the managed
# server engine and the in-process engine run the same llama.cpp commit.
#
#   bash scripts/build_llama_server.sh [VENV]      (make setup runs it; ~3.5 minutes on 2 cores)
#
# Installs VENV/bin/llama-server and VENV/bin/llama-batched-bench (static, native CPU build) and
# VENV/share/speed/llama-server.json (the release, the source's sha256, the build flags), and keeps
# a copy in $SPEED_HOME/build/ for the next clone on this machine.
# No network at build time beyond the package registry: no web UI download (LLAMA_USE_PREBUILT_UI=OFF),
# no HTTPS client (LLAMA_OPENSSL=OFF), no model downloads.
set -euo pipefail
VENV=${1:-.venv}
VENV=$(cd "$VENV" && pwd)
PIP="$VENV/bin/pip"
PY="$VENV/bin/python"
VERSION=$("$PY" -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
WORK="$VENV/src/llama-cpp-python-$VERSION"
BUILD="$WORK/build-server"
JOBS=${SPEED_BUILD_JOBS:-$(nproc)}

mkdir -p "$WORK" "$VENV/share/speed"
# A native build is kept per machine in $SPEED_HOME (keyed by the version, the CPU flags and the
# compiler), so a fresh clone on the same machine (CI) installs it in a second instead of rebuilding.
CPUKEY=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m; cc --version 2>/dev/null | head -1) | sha256sum | cut -c1-16)
KEEP="${SPEED_HOME:-$HOME/.cache/speed}/build/llama-server-$VERSION-$CPUKEY"
if [ -x "$KEEP/llama-server" ] && [ -x "$KEEP/llama-batched-bench" ] && [ -f "$KEEP/llama-server.json" ]; then
  install -m 755 "$KEEP/llama-server" "$VENV/bin/llama-server"
  install -m 755 "$KEEP/llama-batched-bench" "$VENV/bin/llama-batched-bench"
  cp "$KEEP/llama-server.json" "$VENV/share/speed/llama-server.json"
  echo "build_llama_server: installed the build kept in $KEEP"
  exit 0
fi
SDIST=$(ls "$WORK"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)
if [ -z "$SDIST" ]; then
  echo "build_llama_server: fetching the llama-cpp-python $VERSION source distribution (vendored llama.cpp)"
  "$PIP" download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
  SDIST=$(ls "$WORK"/llama_cpp_python-"$VERSION".tar.gz)
fi
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
  tar -xzf "$SDIST" -C "$WORK"
fi
SHA=$(sha256sum "$SDIST" | cut -d' ' -f1)

FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
       -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
       -DLLAMA_LLGUIDANCE=OFF)
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
echo "build_llama_server: building llama-server and llama-batched-bench from llama.cpp (llama-cpp-python $VERSION), $JOBS jobs"
cmake -S "$SRC" -B "$BUILD" "${GEN[@]}" "${FLAGS[@]}" >"$WORK/cmake-configure.log" 2>&1 \
  || { echo "build_llama_server: cmake configure failed; see $WORK/cmake-configure.log"; tail -20 "$WORK/cmake-configure.log"; exit 1; }
cmake --build "$BUILD" --target llama-server llama-batched-bench -j "$JOBS" >"$WORK/cmake-build.log" 2>&1 \
  || { echo "build_llama_server: build failed; see $WORK/cmake-build.log"; tail -30 "$WORK/cmake-build.log"; exit 1; }
install -m 755 "$BUILD/bin/llama-server" "$VENV/bin/llama-server"
install -m 755 "$BUILD/bin/llama-batched-bench" "$VENV/bin/llama-batched-bench"
"$PY" - "$VENV/share/speed/llama-server.json" "$VERSION" "$SHA" "${FLAGS[*]}" <<'EOF'
import json, sys, hashlib
out, version, sha, flags = sys.argv[1:5]
binary = out.replace("share/speed/llama-server.json", "bin/llama-server")
with open(binary, "rb") as fh:
    bin_sha = hashlib.sha256(fh.read()).hexdigest()
json.dump({"llama_cpp_python": version, "sdist_sha256": sha, "cmake_flags": flags.split(),
           "binary_sha256": bin_sha}, open(out, "w"), indent=2)
EOF
"$VENV/bin/llama-server" --version 2>&1 | head -2
mkdir -p "$KEEP.tmp" && cp "$VENV/bin/llama-server" "$VENV/bin/llama-batched-bench" "$VENV/share/speed/llama-server.json" "$KEEP.tmp/" \
  && rm -rf "$KEEP" && mv "$KEEP.tmp" "$KEEP" || echo "build_llama_server: could not keep the build in $KEEP (it will be rebuilt next time)"
echo "build_llama_server: installed $VENV/bin/llama-server"
