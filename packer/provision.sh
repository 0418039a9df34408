#!/bin/sh
# Installs the appliance into an image. The one provisioning script: Packer runs it on EC2
# (amazon-ebs) and in the qemu source, scripts/image-build runs it in a chroot; all three stage
# the same files first:
#   $APPLIANCE_STAGE/appliance     the binary
#   $APPLIANCE_STAGE/files/        the repository's appliance/ directory
# It needs no network: nothing is downloaded here, so the local bake and the AMI get the same bits.
set -eu
stage=${APPLIANCE_STAGE:-/tmp/appliance-stage}
files=$stage/files
[ -x "$stage/appliance" ] || { echo "provision: no binary at $stage/appliance" >&2; exit 1; }
[ -f "$files/appliance.service" ] || { echo "provision: no appliance/ files in $files" >&2; exit 1; }

# The service's own user: no login, no home.
getent group appliance >/dev/null || groupadd --system appliance
getent passwd appliance >/dev/null ||
  useradd --system --gid appliance --no-create-home --home-dir /var/lib/appliance \
    --shell /usr/sbin/nologin appliance

install -m 0755 "$stage/appliance" /usr/local/bin/appliance

# /etc/appliance/config is what the service runs: a relative link to the placeholder until
# first boot links it to the user data's config.
install -d -m 0750 -g appliance /etc/appliance
install -m 0640 -g appliance "$files/default.toml" /etc/appliance/default.toml
ln -sfn default.toml /etc/appliance/config
install -d -m 0750 -o appliance -g appliance /var/lib/appliance
# A baked image carries no instance's state: the next boot is a first boot.
rm -rf /etc/appliance/user-data.* /var/lib/appliance-firstboot /etc/appliance/imds-endpoint

install -m 0644 "$files/sysctl.conf" /etc/sysctl.d/60-appliance.conf
install -m 0644 "$files/appliance.service" /etc/systemd/system/appliance.service
install -m 0644 "$files/appliance-firstboot.service" /etc/systemd/system/appliance-firstboot.service
systemctl enable appliance-firstboot.service appliance.service

# Debian's AMI runs cloud-init, which would otherwise treat the appliance's user data as its own.
if [ -d /etc/cloud/cloud.cfg.d ]; then
  install -m 0644 "$files/cloud-init.cfg" /etc/cloud/cloud.cfg.d/90-appliance.cfg
fi

# The placeholder must pass the same check the service makes before it starts.
/usr/local/bin/appliance check -q -c /etc/appliance/config
/usr/local/bin/appliance --version
echo "provision: appliance installed"
