#!/bin/sh
# Turns a debootstrapped Debian 12 tree into the local stand-in for Debian's official AMI: what
# that image already has and a bare debootstrap lacks (an fstab, DHCP on the first NIC, a serial
# console, the admin user with an SSH key). Runs inside the tree (chroot) during
# scripts/image-build, once per cached base. The appliance itself is added by provision.sh, the
# script the Packer template also runs, so the AMI and the local image get the same provisioning.
set -eu

admin_key=${1:?usage: local-base.sh ADMIN_PUBLIC_KEY_FILE}

echo appliance > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tappliance\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
printf 'LABEL=appliance-root\t/\text4\tdefaults,noatime\t0\t1\n' > /etc/fstab

# Ethernet interfaces get DHCP from systemd-networkd, as on EC2, unless the kernel command
# line's ip= configures one statically (systemd-network-generator writes 90-IFACE.network,
# which sorts before this file and so wins).
mkdir -p /etc/systemd/network
cat > /etc/systemd/network/99-dhcp.network <<'NET'
[Match]
Name=en* eth*
Type=ether

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
UseDomains=no
NET
systemctl enable systemd-networkd.service systemd-networkd-wait-online.service
# Nothing in the image may reach outside its test network: no time servers on the way.
systemctl disable systemd-timesyncd.service 2>/dev/null || true
systemctl mask apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
# Wait for one configured link only, not for every interface (a second NIC may stay down).
mkdir -p /etc/systemd/system/systemd-networkd-wait-online.service.d
cat > /etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf <<'NET'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
NET

# The admin user, as Debian's AMI names it: key login only, sudo without a password.
id admin >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --groups sudo admin
passwd --lock admin >/dev/null
install -d -m 700 -o admin -g admin /home/admin/.ssh
install -m 600 -o admin -g admin "$admin_key" /home/admin/.ssh/authorized_keys
echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-admin
chmod 440 /etc/sudoers.d/90-admin
# Host keys are made at first boot, so two VMs from one image do not share them.
rm -f /etc/ssh/ssh_host_*
cat > /etc/systemd/system/ssh-host-keys.service <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
systemctl enable ssh-host-keys.service

# Each VM gets its own machine id at first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
