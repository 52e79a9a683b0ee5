# Sourced by scripts/test and scripts/robustness: installs from Debian's packages what
# the tests start or use themselves (DESIGN §12), when it is missing.

export PATH="$PATH:/usr/sbin:/sbin"

# Installs the first of the given packages that installs.
install_debian() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    for package in "$@"; do
        if $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" > /dev/null; then
            return 0
        fi
    done
    echo "$0: could not install any of: $*" >&2
    return 1
}

# What the fault suite (tests/tests/robustness_process.rs) needs: ip (network
# namespaces, veth pairs, a bridge), iptables (cut links), libfaketime (clock skew).
install_fault_tools() {
    if ! command -v ip > /dev/null 2>&1; then
        printf '\n==> installing iproute2 (network namespaces for the partition tests)\n'
        install_debian iproute2
    fi
    if ! command -v iptables > /dev/null 2>&1; then
        printf '\n==> installing iptables (cut links for the partition tests)\n'
        install_debian iptables
    fi
    if [ ! -f /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
        printf '\n==> installing faketime (libfaketime for the clock-skew tests)\n'
        install_debian faketime
    fi
}
