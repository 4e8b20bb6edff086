# Shared by the shell checks (sourced): a scratch folder removed on exit, FAIL lines counted in
# $failures, and the mpirun command line for loopback runs.

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
checks=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# mpirun for runs of more processes than cores on this machine, as root in containers (as CI is).
mpi_launch() { # MPIEXEC
    launch="$1 --oversubscribe --bind-to none"
    [ "$(id -u)" -eq 0 ] && launch="$launch --allow-run-as-root"
    echo "$launch"
}
