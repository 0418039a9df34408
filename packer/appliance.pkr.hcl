# The appliance image: Debian 12 with the appliance binary, its units, default config and
# sysctl tuning, installed by the one shared script, provision.sh.
#
#   AMI:   packer init packer/ && packer build -only 'amazon-ebs.appliance' \
#            -var region=eu-west-1 -var subnet_id=subnet-... packer/
#   local: packer build -only 'qemu.appliance' -var base_dir=/var/cache/appliance-image/base-KEY \
#            packer/appliance.pkr.hcl     (base_dir from `scripts/image-build --base-only`)
#
# Both sources upload the same files to /tmp/appliance-stage and run provision.sh there, exactly
# as scripts/image-build does in a chroot.

variable "region" {
  type        = string
  default     = "us-east-1"
  description = "The AWS region the AMI is built in."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "The instance type of the build instance."
}

variable "base_image_name" {
  type        = string
  default     = "debian-12-amd64-*"
  description = "Name filter for the base AMI: Debian's official Debian 12 images."
}

variable "base_image_owner" {
  type        = string
  default     = "136693071363"
  description = "The AWS account that publishes Debian's official AMIs."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "The subnet of the build instance (empty: the default VPC's)."
}

variable "tags" {
  type = map(string)
  default = {
    Project = "appliance"
  }
  description = "Tags for the AMI, its snapshots and the build instance."
}

variable "appliance_binary" {
  type        = string
  default     = "target/release/appliance"
  description = "The appliance binary to bake (Linux x86_64), relative to where packer runs."
}

variable "appliance_files" {
  type        = string
  default     = "appliance"
  description = "The repository's appliance/ directory (units, default config, sysctl)."
}

variable "base_dir" {
  type        = string
  default     = "/var/cache/appliance-image/base"
  description = "qemu source: a directory from `scripts/image-build --base-only` (base.qcow2, vmlinuz, initrd.img, admin_ed25519)."
}

variable "qemu_output_directory" {
  type        = string
  default     = "packer/output-qemu"
  description = "qemu source: where the baked appliance.qcow2 (and the build's console log) go."
}

variable "qemu_accelerator" {
  type        = string
  default     = "kvm"
  description = "qemu source: kvm, or tcg where KVM does not work."
}

variable "manifest" {
  type        = string
  default     = "packer/manifest.json"
  description = "Where the manifest post-processor records the builds."
}

locals {
  timestamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "appliance" {
  region        = var.region
  instance_type = var.instance_type
  subnet_id     = var.subnet_id
  source_ami_filter {
    filters = {
      name                = var.base_image_name
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = [var.base_image_owner]
    most_recent = true
  }
  ssh_username = "admin"
  ami_name     = "appliance-${local.timestamp}"
  # BEGIN packer >= 1.7 (the amazon plugin; Debian's packer 1.6.6 knows neither setting, so
  # tests/image.rs validates the template without these lines, and their syntax separately).
  # IMDSv2 only: the build instance answers only token-authenticated requests, and instances
  # launched from the AMI require IMDSv2 by default (imds_support).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"
  # END packer >= 1.7
  tags          = var.tags
  snapshot_tags = var.tags
  run_tags      = var.tags
}

source "qemu" "appliance" {
  disk_image       = true
  iso_url          = "${var.base_dir}/base.qcow2"
  iso_checksum     = "none"
  format           = "qcow2"
  accelerator      = var.qemu_accelerator
  headless         = true
  memory           = 1024
  net_device       = "virtio-net"
  disk_interface   = "virtio"
  output_directory = var.qemu_output_directory
  vm_name          = "appliance.qcow2"
  # The local base boots its kernel directly, as scripts/image-boot does.
  qemuargs = [
    ["-kernel", "${var.base_dir}/vmlinuz"],
    ["-initrd", "${var.base_dir}/initrd.img"],
    ["-append", "root=LABEL=appliance-root ro console=ttyS0 net.ifnames=0"],
    ["-serial", "file:${var.qemu_output_directory}-console.log"],
  ]
  communicator         = "ssh"
  ssh_username         = "admin"
  ssh_private_key_file = "${var.base_dir}/admin_ed25519"
  ssh_timeout          = "10m"
  shutdown_command     = "sudo systemctl poweroff"
}

build {
  sources = ["source.amazon-ebs.appliance", "source.qemu.appliance"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/appliance-stage/files"]
  }
  provisioner "file" {
    source      = var.appliance_binary
    destination = "/tmp/appliance-stage/appliance"
  }
  provisioner "file" {
    source      = "${var.appliance_files}/"
    destination = "/tmp/appliance-stage/files"
  }
  provisioner "file" {
    source      = "packer/provision.sh"
    destination = "/tmp/appliance-stage/provision.sh"
  }
  provisioner "shell" {
    inline = [
      "chmod +x /tmp/appliance-stage/appliance",
      "sudo env APPLIANCE_STAGE=/tmp/appliance-stage sh /tmp/appliance-stage/provision.sh",
      "rm -rf /tmp/appliance-stage",
    ]
  }

  post-processor "manifest" {
    output     = var.manifest
    strip_path = true
    custom_data = {
      binary = var.appliance_binary
    }
  }
}
