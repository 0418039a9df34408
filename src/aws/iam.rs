//! The IAM role an HA pair runs under: the least-privilege policy it needs to move the VIP and
//! the Elastic IP, and an idempotent set-up of role, inline policy and instance profile (what
//! the seed's step 1 did by hand in the console).

use std::fmt;

use aws_sdk_iam::Client;
use serde_json::{json, Value};

use super::{explain, AwsError};

/// The inline policy's name on the role.
pub const POLICY_NAME: &str = "appliance-ha";

/// What the HA side calls, and nothing else. The EC2 actions that change things cannot be
/// narrowed to the pair's interfaces without knowing them in advance; scope them with a
/// condition on your own tags if your account needs it.
pub fn ha_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "MoveTheVirtualIp",
                "Effect": "Allow",
                "Action": [
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                    "ec2:AssociateAddress"
                ],
                "Resource": "*"
            },
            {
                "Sid": "ReadWhoHoldsIt",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeAddresses",
                    "ec2:DescribeInstances"
                ],
                "Resource": "*"
            }
        ]
    })
}

/// Lets EC2 instances assume the role.
pub fn ec2_trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "ec2.amazonaws.com" },
            "Action": "sts:AssumeRole"
        }]
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// Already there and as wanted.
    Found,
    /// Already there, brought up to date.
    Updated,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Found => "found",
            Outcome::Updated => "updated",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("instance profile {profile} already holds role {other}; an instance profile holds one role: remove it or pick another --profile-name")]
    ProfileHoldsAnotherRole { profile: String, other: String },
}

fn missing<E: aws_sdk_iam::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("NoSuchEntity")
}

/// IAM returns policy documents URL-encoded; some stand-ins return them as they were sent.
fn document(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        let decoded = percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .ok()?;
        serde_json::from_str(&decoded).ok()
    })
}

/// Creates what is missing, fixes what differs, and says which was which. Safe to run again.
pub async fn setup(iam: &Client, role: &str, profile: &str) -> Result<Vec<Step>, SetupError> {
    let mut steps = Vec::new();

    let role_outcome = match iam.get_role().role_name(role).send().await {
        Ok(_) => Outcome::Found,
        Err(e) if e.as_service_error().is_some_and(missing) => {
            iam.create_role()
                .role_name(role)
                .assume_role_policy_document(ec2_trust_policy().to_string())
                .description("appliance HA pair: moves the VIP and Elastic IP between the pair")
                .send()
                .await
                .map_err(|e| explain("iam:CreateRole", Some(role), &e))?;
            Outcome::Created
        }
        Err(e) => return Err(explain("iam:GetRole", Some(role), &e).into()),
    };
    steps.push(Step {
        what: format!("role {role}"),
        outcome: role_outcome,
    });

    let wanted = ha_policy();
    let policy_outcome = match iam
        .get_role_policy()
        .role_name(role)
        .policy_name(POLICY_NAME)
        .send()
        .await
    {
        Ok(found) if document(found.policy_document()) == Some(wanted.clone()) => None,
        Ok(_) => Some(Outcome::Updated),
        Err(e) if e.as_service_error().is_some_and(missing) => Some(Outcome::Created),
        Err(e) => return Err(explain("iam:GetRolePolicy", Some(role), &e).into()),
    };
    if policy_outcome.is_some() {
        iam.put_role_policy()
            .role_name(role)
            .policy_name(POLICY_NAME)
            .policy_document(wanted.to_string())
            .send()
            .await
            .map_err(|e| explain("iam:PutRolePolicy", Some(role), &e))?;
    }
    steps.push(Step {
        what: format!("inline policy {POLICY_NAME} on role {role}"),
        outcome: policy_outcome.unwrap_or(Outcome::Found),
    });

    let (profile_outcome, roles) = match iam
        .get_instance_profile()
        .instance_profile_name(profile)
        .send()
        .await
    {
        Ok(found) => {
            let roles: Vec<String> = found
                .instance_profile()
                .map(|p| {
                    p.roles()
                        .iter()
                        .map(|r| r.role_name().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (Outcome::Found, roles)
        }
        Err(e) if e.as_service_error().is_some_and(missing) => {
            iam.create_instance_profile()
                .instance_profile_name(profile)
                .send()
                .await
                .map_err(|e| explain("iam:CreateInstanceProfile", Some(profile), &e))?;
            (Outcome::Created, Vec::new())
        }
        Err(e) => return Err(explain("iam:GetInstanceProfile", Some(profile), &e).into()),
    };
    steps.push(Step {
        what: format!("instance profile {profile}"),
        outcome: profile_outcome,
    });

    let membership = if roles.iter().any(|r| r == role) {
        Outcome::Found
    } else if let Some(other) = roles.first() {
        return Err(SetupError::ProfileHoldsAnotherRole {
            profile: profile.to_string(),
            other: other.clone(),
        });
    } else {
        iam.add_role_to_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
            .map_err(|e| explain("iam:AddRoleToInstanceProfile", Some(profile), &e))?;
        Outcome::Created
    };
    steps.push(Step {
        what: format!("role {role} in instance profile {profile}"),
        outcome: membership,
    });
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_what_the_ha_side_calls() {
        let policy = ha_policy();
        let mut actions: Vec<&str> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap())
            .map(|a| a.as_str().unwrap())
            .collect();
        actions.sort();
        assert_eq!(
            actions,
            [
                "ec2:AssignPrivateIpAddresses",
                "ec2:AssociateAddress",
                "ec2:DescribeAddresses",
                "ec2:DescribeInstances",
                "ec2:DescribeNetworkInterfaces",
                "ec2:UnassignPrivateIpAddresses",
            ]
        );
        // Every call the ec2 back end makes is named in the policy.
        let backend = include_str!("../ha/ec2.rs");
        for call in backend.split('"').filter(|s| s.starts_with("ec2:")) {
            assert!(actions.contains(&call), "{call} is called but not allowed");
        }
    }

    #[test]
    fn url_encoded_documents_are_read() {
        let encoded = "%7B%22a%22%3A1%7D";
        assert_eq!(document(encoded), Some(json!({"a": 1})));
        assert_eq!(document("{\"a\":1}"), Some(json!({"a": 1})));
    }
}
