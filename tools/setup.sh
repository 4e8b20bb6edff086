#!/usr/bin/env bash
# Sets up ompcnn on Debian: installs the packages that are missing (through sudo when not root),
# then configures and builds into build/. Safe to run again; it only does what is left to do.
#
#   tools/setup.sh            build dependencies, plus gnuplot, numpy, ONNX (python3-onnx),
#                             PyTorch and ONNX Runtime (npm) for the tools/ scripts and the
#                             export checks, and Fashion-MNIST (config/fashion.json)
#   tools/setup.sh --minimal  build dependencies only
#   tools/setup.sh --portable build without -march=native (for a binary to copy to other CPUs)
#   tools/setup.sh --mpi      also Open MPI, and build trainer for mpirun (docs/mpi.md); the
#                             choice stays in build/ until --no-mpi
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
packages=(gcc make cmake pkg-config libcjson-dev check zlib1g-dev libpng-dev libprotobuf-c-dev
    protobuf-c-compiler libonnx-dev)
tool_packages=(gnuplot-nox python3-numpy dataset-fashion-mnist python3-onnx python3-torch)
cmake_args=(-DCMAKE_BUILD_TYPE=Release)

for arg in "$@"; do
    case "$arg" in
    --minimal) tool_packages=() ;;
    --portable) cmake_args+=(-DOMPCNN_NATIVE=OFF) ;;
    --mpi)
        packages+=(libopenmpi-dev openmpi-bin)
        cmake_args+=(-DOMPCNN_MPI=ON)
        ;;
    --no-mpi) cmake_args+=(-DOMPCNN_MPI=OFF) ;;
    -h | --help)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "setup.sh: unknown option $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

missing=()
for pkg in "${packages[@]}" "${tool_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi

cmake -S "$root" -B "$root/build" "${cmake_args[@]}" >/dev/null
cmake --build "$root/build" -j "$(nproc)"
echo "setup.sh: built $root/build/trainer"

# ONNX Runtime from npm, for checking exported models (tools/onnx/run.js, the export test). Its
# package carries its CPU binaries; its install script would download more, so it is skipped.
if [ ${#tool_packages[@]} -gt 0 ] && [ ! -d "$root/tools/onnx/node_modules/onnxruntime-node" ]; then
    if ! command -v node >/dev/null; then
        echo "setup.sh: installing nodejs npm"
        sudo=()
        [ "$(id -u)" -ne 0 ] && sudo=(sudo)
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            nodejs npm
    fi
    if command -v npm >/dev/null &&
        (cd "$root/tools/onnx" && npm install --ignore-scripts --no-audit --no-fund \
            --loglevel=error >/dev/null); then
        echo "setup.sh: installed onnxruntime-node in tools/onnx"
    else
        echo "setup.sh: could not install onnxruntime-node (npm); the export test skips ONNX Runtime"
    fi
fi
