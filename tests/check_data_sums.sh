#!/bin/sh
# The shipped MNIST files unpack to the originals: each SHA-256 listed in data/README.md must match.
# Usage: check_data_sums.sh DATA_DIR
set -eu
data=$1
status=0
count=0
for gz in "$data"/mnist/*.gz; do
    name=$(basename "$gz" .gz)
    want=$(grep -o "[0-9a-f]\{64\}  $name\$" "$data/README.md" | cut -d' ' -f1 || true)
    if [ -z "$want" ]; then
        echo "data/README.md lists no SHA-256 for $name"
        status=1
        continue
    fi
    got=$(gzip -dc "$gz" | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
        echo "$name: SHA-256 $got, data/README.md says $want"
        status=1
    else
        count=$((count + 1))
    fi
done
[ "$count" -eq 4 ] || { echo "expected 4 verified MNIST files, verified $count"; status=1; }
[ $status -eq 0 ] && echo "all $count MNIST files match data/README.md"
exit $status
