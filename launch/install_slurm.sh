#!/usr/bin/env bash
# Installs the Debian packages of a one-node Slurm cluster when missing (a
# few seconds; nothing when present), for the Slurm tests
# (launch/slurm_test.py), which start their own daemons. .ci/run and the
# tests' cluster (launch/slurm_cluster.py) run it. No service is started:
# policy-rc.d refuses them while apt runs.
set -euo pipefail
packages=(slurmctld slurmd slurm-client munge)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null \
    | grep -q 'install ok installed' || missing+=("$package")
done
(( ${#missing[@]} )) || exit 0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
