#!/bin/sh
# `cmake --install` gives a C library: into a temporary prefix, then a 20-line program
# (tests/install_example.c) built with `pkg-config --cflags --libs ompcnn` and, separately, with
# find_package(ompcnn) loads a trained .npz and classifies PNG images exactly as `trainer
# predict` does; the man page, the example configs (which train from there) and the docs are
# installed.
# Usage: check_install.sh BUILD_DIR SOURCE_DIR TRAINER
set -u
build=$1
src=$2
trainer=$3
# shellcheck source=tests/testlib.sh
. "$(dirname "$0")/testlib.sh"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
    { fail "cmake --install failed: $(tail -3 "$work/install.log")"; exit 1; }
libdir=$(find "$prefix" -name 'libompcnn.so' -printf '%h\n' | head -1)
for f in bin/trainer include/ompcnn/ompcnn.h share/man/man1/trainer.1 \
    share/ompcnn/config/mnist.json share/doc/ompcnn/config.md; do
    checks=$((checks + 1))
    [ -e "$prefix/$f" ] || fail "not installed: $f"
done
[ -n "$libdir" ] && [ -e "$libdir/libompcnn.a" ] && [ -e "$libdir/pkgconfig/ompcnn.pc" ] ||
    fail "libompcnn.so, libompcnn.a or ompcnn.pc not installed"

# A network trained on the installed colour example, and two of its test images.
cd "$work" || exit 1
"$prefix/bin/trainer" "$prefix/share/ompcnn/config/colour-example.json" --set training.epochs=2 \
    --set 'data.normalize={"mean":[0.1,0.2,0.3],"std":[0.3,0.2,0.25]}' \
    --save net.npz >train.log 2>&1 || fail "the installed trainer and config did not train: $(tail -1 train.log)"
images=$(ls "$src"/data/colour-shapes/test/*/0000*.png | head -6)
# predict's "FILE: class K (NAME)  p P0 P1 ..." as the example prints it: "FILE: class K (NAME) p PK"
# shellcheck disable=SC2086
"$trainer" predict --load net.npz $images |
    awk '{k = $3; for (i = 1; i <= NF; i++) if ($i == "p") print $1, $2, $3, $4, "p", $(i + 1 + k)}' >want.txt

export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
if cc -std=c99 -Wall -Wextra -Werror "$src/tests/install_example.c" -o example \
    $(pkg-config --cflags --libs ompcnn) 2>cc.log; then
    # shellcheck disable=SC2086
    LD_LIBRARY_PATH="$libdir" ./example net.npz $images >got.txt 2>&1 || fail "the example failed: $(cat got.txt)"
    checks=$((checks + 1))
    diff got.txt want.txt >/dev/null ||
        fail "the example's classes differ from predict's: $(paste got.txt want.txt | head -2)"
    LD_LIBRARY_PATH="$libdir" ./example net.npz "$src/tests/bad/folders/good/a/0.png" >bad.txt 2>&1 &&
        fail "an image of another shape was classified"
    grep -q '0.png: a 5x6 image with 1 channel, the network takes 20x20 with 3' bad.txt ||
        fail "the library's message for a wrong image: $(cat bad.txt)"
else
    fail "the example does not build with pkg-config: $(head -3 cc.log)"
fi

# find_package(ompcnn) in a CMake project.
mkdir -p cmake-project
cat >cmake-project/CMakeLists.txt <<CMAKE
cmake_minimum_required(VERSION 3.18)
project(example C)
find_package(ompcnn 0.1 REQUIRED)
add_executable(example $src/tests/install_example.c)
target_link_libraries(example PRIVATE ompcnn::ompcnn)
CMAKE
checks=$((checks + 1))
if cmake -S cmake-project -B cmake-build -DCMAKE_PREFIX_PATH="$prefix" >cmake.log 2>&1 &&
    cmake --build cmake-build >>cmake.log 2>&1; then
    # shellcheck disable=SC2086
    LD_LIBRARY_PATH="$libdir" ./cmake-build/example net.npz $images | diff - want.txt >/dev/null ||
        fail "the find_package build classifies differently"
else
    fail "find_package(ompcnn) does not build: $(tail -5 cmake.log)"
fi

echo "install: $checks checks, $failures failed"
[ "$failures" -eq 0 ]
