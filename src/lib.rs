//! The appliance: a load balancer on Pingora that runs nginx.conf files and legacy ELB scripts.
//!
//! The pipeline, one folder a stage:
//!
//! - [`compile`]: front ends that read an nginx.conf, an ELB script or an appliance.toml;
//! - [`config`]: the one internal model they all produce, validated once;
//! - [`proxy`]: the Pingora data plane that runs it;
//! - [`ha`], [`aws`] and [`admin`]: the pair, the cloud, and the operator's view.
//!
//! `main.rs` only parses the command line and calls in here.

pub mod admin;
pub mod aws;
pub mod cli;
pub mod compile;
pub mod config;
pub mod firstboot;
pub mod ha;
pub mod process;
pub mod proxy;
mod sync;
