//! The ec2 back end: the VIP is a secondary private IP that moves between the two instances'
//! primary interfaces (AssignPrivateIpAddresses with AllowReassignment), and the Elastic IP
//! follows it (AssociateAddress with AllowReassociation). The EC2 API is the arbiter: ownership
//! is read back before and after every take-over, and a master that finds the address on
//! another interface steps down instead of taking it back.
//!
//! Reading ownership does not trust a single field. On AWS, reassignment removes the address
//! from the old interface; moto (and any API mid-change) can show it on both. So the holder is
//! the interface the Elastic IP points at when it also lists the VIP, else the interface that
//! lists it; after a take-over, other interfaces that still list it are cleaned up, and a node
//! that steps down unassigns the address from its own interface.
//!
//! Every call retries with exponential backoff and jitter (the SDK's standard retry mode, tuned
//! below for a take-over that should finish in about a second), and every failure names the
//! call and so the IAM permission it needs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::types::{Filter, InstanceStateName};

use super::state::Holder;
use super::{HaError, Reading, VipBackend};
use crate::aws::imds::{self, Identity};
use crate::aws::{explain, Endpoint};
use crate::config::Ha;

/// A reading younger than this is reused by a take-over instead of asking again.
const FRESH: Duration = Duration::from_secs(1);

pub struct Ec2Vip {
    client: aws_sdk_ec2::Client,
    me: Identity,
    subnet_id: String,
    vip: Ipv4Addr,
    eip_allocation_id: Option<String>,
    last: Option<Ownership>,
}

/// Who the EC2 API says has the VIP.
#[derive(Clone, Debug)]
struct Ownership {
    /// Interfaces in the subnet that list the VIP, with the instance each is attached to.
    listed_on: Vec<(String, Option<String>)>,
    /// The interface the Elastic IP is associated with, if any.
    eip_on: Option<String>,
    read_at: Instant,
}

impl Ownership {
    fn lists(&self, eni: &str) -> bool {
        self.listed_on.iter().any(|(e, _)| e == eni)
    }

    /// The interface that holds the VIP: the Elastic IP's when that one lists it too, else the
    /// one listing it (ours first, when the API shows it on several).
    fn holder(&self, mine: &str) -> Option<&(String, Option<String>)> {
        let by_eip = self
            .eip_on
            .as_deref()
            .and_then(|eni| self.listed_on.iter().find(|(e, _)| e == eni));
        by_eip
            .or_else(|| self.listed_on.iter().find(|(e, _)| e == mine))
            .or_else(|| self.listed_on.first())
    }

    fn describe(&self, mine: &str, eip: Option<&str>) -> String {
        let name = |(eni, instance): &(String, Option<String>)| match instance {
            Some(i) => format!("{eni} ({i})"),
            None => eni.clone(),
        };
        let mut text = match self.holder(mine) {
            Some(h) => name(h),
            None => "no interface".to_string(),
        };
        if let Some(alloc) = eip {
            match &self.eip_on {
                Some(eni) => text.push_str(&format!("; Elastic IP {alloc} on {eni}")),
                None => text.push_str(&format!("; Elastic IP {alloc} not associated")),
            }
        }
        let holder = self.holder(mine).map(|(e, _)| e.as_str());
        let others: Vec<String> = self
            .listed_on
            .iter()
            .filter(|(e, _)| Some(e.as_str()) != holder)
            .map(name)
            .collect();
        if !others.is_empty() {
            text.push_str(&format!("; also listed on {}", others.join(", ")));
        }
        text
    }
}

/// The EC2 client settings for HA: a few quick retries with backoff and jitter, and time limits
/// that keep a hung endpoint from stalling a take-over.
pub fn tune(builder: aws_sdk_ec2::config::Builder) -> aws_sdk_ec2::Config {
    builder
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .build()
}

impl Ec2Vip {
    /// Finds this instance through IMDSv2 and builds the EC2 client (normal credential chain,
    /// `[ha] region` or the instance's, `[ha] ec2_endpoint` if set).
    pub async fn discover(ha: &Ha) -> Result<Ec2Vip, HaError> {
        let me = imds::identity(ha.imds_endpoint.as_deref())
            .await
            .map_err(|e| HaError::Imds {
                path: e.path,
                detail: e.detail,
            })?;
        let sdk = crate::aws::sdk_config(&Endpoint {
            region: Some(ha.region.clone().unwrap_or_else(|| me.region.clone())),
            url: ha.ec2_endpoint.clone(),
        })
        .await;
        let client = aws_sdk_ec2::Client::from_conf(tune(aws_sdk_ec2::config::Builder::from(&sdk)));
        Ec2Vip::new(ha, client, me).await
    }

    /// With a client and identity from elsewhere; reads this instance's interface to learn its
    /// subnet.
    pub async fn new(
        ha: &Ha,
        client: aws_sdk_ec2::Client,
        me: Identity,
    ) -> Result<Ec2Vip, HaError> {
        let IpAddr::V4(vip) = ha.vip else {
            return Err(HaError::Setup(format!(
                "{} is IPv6; ec2 mode moves IPv4 addresses",
                ha.vip
            )));
        };
        let call = "ec2:DescribeNetworkInterfaces";
        let answer = client
            .describe_network_interfaces()
            .network_interface_ids(&me.eni_id)
            .send()
            .await
            .map_err(|e| explain(call, Some(&me.eni_id), &e))?;
        let subnet_id = answer
            .network_interfaces()
            .first()
            .and_then(|eni| eni.subnet_id())
            .ok_or_else(|| HaError::Setup(format!("{call} shows no subnet for {}", me.eni_id)))?
            .to_string();
        Ok(Ec2Vip {
            client,
            me,
            subnet_id,
            vip,
            eip_allocation_id: ha.eip_allocation_id.clone(),
            last: None,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.me
    }

    async fn ownership(&self) -> Result<Ownership, HaError> {
        let call = "ec2:DescribeNetworkInterfaces";
        let vip = self.vip.to_string();
        let mut listed_on = Vec::new();
        let mut pages = self
            .client
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("subnet-id")
                    .values(&self.subnet_id)
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        while let Some(eni) = pages.next().await {
            let eni = eni.map_err(|e| explain(call, Some(&self.subnet_id), &e))?;
            let lists = eni
                .private_ip_addresses()
                .iter()
                .any(|a| a.private_ip_address() == Some(vip.as_str()));
            if let (true, Some(id)) = (lists, eni.network_interface_id()) {
                let instance = eni
                    .attachment()
                    .and_then(|a| a.instance_id())
                    .map(str::to_string);
                listed_on.push((id.to_string(), instance));
            }
        }
        let eip_on = match &self.eip_allocation_id {
            None => None,
            Some(alloc) => {
                let call = "ec2:DescribeAddresses";
                let answer = self
                    .client
                    .describe_addresses()
                    .allocation_ids(alloc)
                    .send()
                    .await
                    .map_err(|e| explain(call, Some(alloc), &e))?;
                answer
                    .addresses()
                    .first()
                    .and_then(|a| a.network_interface_id())
                    .map(str::to_string)
            }
        };
        Ok(Ownership {
            listed_on,
            eip_on,
            read_at: Instant::now(),
        })
    }

    async fn instance_running(&self, instance: &str) -> Result<bool, HaError> {
        let call = "ec2:DescribeInstances";
        let answer = self
            .client
            .describe_instances()
            .instance_ids(instance)
            .send()
            .await
            .map_err(|e| explain(call, Some(instance), &e))?;
        Ok(answer
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .any(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running)))
    }

    async fn unassign(&self, eni: &str) -> Result<(), HaError> {
        self.client
            .unassign_private_ip_addresses()
            .network_interface_id(eni)
            .private_ip_addresses(self.vip.to_string())
            .send()
            .await
            .map_err(|e| explain("ec2:UnassignPrivateIpAddresses", Some(eni), &e))?;
        Ok(())
    }

    fn reading(&self, own: &Ownership, live: bool) -> Reading {
        let mine = self.me.eni_id.as_str();
        let holder = match own.holder(mine) {
            None => Holder::Nobody,
            Some((eni, _)) if eni == mine => Holder::Us,
            Some(_) => Holder::Other {
                live,
                we_win: false,
            },
        };
        Reading {
            holder,
            detail: own.describe(mine, self.eip_allocation_id.as_deref()),
        }
    }
}

#[async_trait]
impl VipBackend for Ec2Vip {
    async fn read(&mut self, liveness: bool) -> Result<Reading, HaError> {
        let own = self.ownership().await?;
        let mine = self.me.eni_id.clone();
        let live = match own.holder(&mine) {
            Some((eni, Some(instance))) if liveness && *eni != mine => {
                self.instance_running(instance).await?
            }
            // Without evidence either way, assume alive: that errs toward not fighting.
            _ => true,
        };
        let reading = self.reading(&own, live);
        self.last = Some(own);
        Ok(reading)
    }

    async fn claim(&mut self) -> Result<Reading, HaError> {
        let before = match self.last.take() {
            Some(own) if own.read_at.elapsed() < FRESH => own,
            _ => self.ownership().await?,
        };
        let mine = self.me.eni_id.clone();
        let vip = self.vip.to_string();
        if !before.lists(&mine) {
            self.client
                .assign_private_ip_addresses()
                .network_interface_id(&mine)
                .private_ip_addresses(&vip)
                .allow_reassignment(true)
                .send()
                .await
                .map_err(|e| explain("ec2:AssignPrivateIpAddresses", Some(&mine), &e))?;
        }
        if let Some(alloc) = &self.eip_allocation_id {
            if before.eip_on.as_deref() != Some(mine.as_str()) {
                self.client
                    .associate_address()
                    .allocation_id(alloc)
                    .network_interface_id(&mine)
                    .private_ip_address(&vip)
                    .allow_reassociation(true)
                    .send()
                    .await
                    .map_err(|e| explain("ec2:AssociateAddress", Some(alloc), &e))?;
            }
        }
        let mut after = self.ownership().await?;
        let reading = self.reading(&after, true);
        if reading.holder != Holder::Us {
            self.last = Some(after);
            return Err(HaError::NotTaken(format!(
                "the EC2 API shows the VIP {vip} on {}",
                reading.detail
            )));
        }
        // What AllowReassignment does on AWS, done by hand where the API left the address on
        // another interface too.
        let others: Vec<String> = after
            .listed_on
            .iter()
            .filter(|(e, _)| *e != mine)
            .map(|(e, _)| e.clone())
            .collect();
        for eni in others {
            match self.unassign(&eni).await {
                Ok(()) => after.listed_on.retain(|(e, _)| *e != eni),
                Err(e) => {
                    tracing::warn!(
                        "ha: the VIP {vip} is still listed on {eni} and stays there: {e}"
                    )
                }
            }
        }
        let reading = self.reading(&after, true);
        self.last = Some(after);
        Ok(reading)
    }

    async fn keep(&mut self) -> Result<(), HaError> {
        Ok(())
    }

    async fn release(&mut self) -> Result<(), HaError> {
        let mine = self.me.eni_id.clone();
        let call = "ec2:DescribeNetworkInterfaces";
        let answer = self
            .client
            .describe_network_interfaces()
            .network_interface_ids(&mine)
            .send()
            .await
            .map_err(|e| explain(call, Some(&mine), &e))?;
        let vip = self.vip.to_string();
        let listed = answer.network_interfaces().iter().any(|eni| {
            eni.private_ip_addresses()
                .iter()
                .any(|a| a.private_ip_address() == Some(vip.as_str()))
        });
        self.last = None;
        if listed {
            self.unassign(&mine).await?;
        }
        Ok(())
    }

    fn default_node_id(&self) -> String {
        self.me.instance_id.clone()
    }

    fn live_holder_is_alive_agent(&self) -> bool {
        false
    }
}
