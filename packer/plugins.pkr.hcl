# Plugin requirements, in a file of their own: `packer init packer/` reads them (Packer >= 1.7).
# Debian's packer 1.6.6 knows no `required_plugins` (its amazon and qemu builders are built in),
# so the suite validates the template without this file (tests/image.rs).
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      version = ">= 1.2.0"
      source  = "github.com/hashicorp/amazon"
    }
    qemu = {
      version = ">= 1.0.9"
      source  = "github.com/hashicorp/qemu"
    }
  }
}
