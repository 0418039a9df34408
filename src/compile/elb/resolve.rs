//! What the script names and the model needs as files and addresses:
//!
//! - instance IDs to private addresses: from `--instances-file` when given (offline), else
//!   through EC2 DescribeInstances with the SDK's normal credentials and region;
//! - certificate ARNs to PEM files: the script's own `iam-servercertupload -b/-k/-c` files
//!   (relative to the script), then `--cert-dir` (`NAME.crt` or `NAME.pem`, `NAME.key`, optional
//!   `NAME.chain.crt` or `NAME.chain.pem`), then IAM GetServerCertificate for the body and chain,
//!   saved into `--cert-dir` beside the `NAME.key` that must already be there: IAM never returns
//!   a private key.
//!
//! The AWS calls run on a small runtime of their own, on a thread of their own, so that the
//! compiler stays a plain function whether or not its caller runs inside tokio.
//!
//! `--instances-file` holds one `INSTANCE-ID ADDRESS` pair a line (`#` starts a comment), or
//! JSON: an object `{"i-0abc": "10.0.0.5"}`, or the output of `aws ec2 describe-instances`
//! (any object with `InstanceId` and `PrivateIpAddress` is read).

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::lower::{CertFiles, Needs};
use super::semantics::{CertRef, State};
use crate::aws::{self, Endpoint};
use crate::compile::diag::Diagnostic;
use crate::compile::{describe_io_error, Options};

#[derive(Debug, Default)]
pub struct Resolved {
    pub addresses: HashMap<String, IpAddr>,
    /// Files by certificate ARN.
    pub certs: HashMap<String, CertFiles>,
    pub warnings: Vec<Diagnostic>,
}

/// A certificate to fetch from IAM, and the key already found for it.
struct Fetch {
    cert: CertRef,
    key: PathBuf,
    dir: PathBuf,
}

pub fn resolve(needs: &Needs, state: &State, options: &Options) -> Result<Resolved, Diagnostic> {
    let src = &state.src;
    let mut resolved = Resolved::default();
    let mut fetch = Vec::new();
    for cert in &needs.certs {
        match local_certificate(cert, state, options)? {
            Local::Found(files) => {
                resolved.certs.insert(cert.id.clone(), files);
            }
            Local::Fetch { key, dir } => fetch.push(Fetch {
                cert: cert.clone(),
                key,
                dir,
            }),
        }
    }
    let ids: Vec<(String, Range<usize>)> = needs
        .instances
        .iter()
        .map(|(id, span)| (id.clone(), span.clone()))
        .collect();
    let ec2_ids = match &options.instances_file {
        Some(file) => {
            let table = read_instances_file(file)?;
            for (id, span) in &ids {
                let ip = table.get(id).ok_or_else(|| {
                    src.error(
                        format!(
                            "instance \"{id}\" is not in the instances file {}",
                            file.display()
                        ),
                        span.clone(),
                    )
                })?;
                resolved.addresses.insert(id.clone(), *ip);
            }
            Vec::new()
        }
        None => ids,
    };
    if ec2_ids.is_empty() && fetch.is_empty() {
        return Ok(resolved);
    }
    let endpoint = Endpoint {
        region: options.region.clone(),
        url: options.aws_endpoint.clone(),
    };
    let (addresses, fetched) = std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Diagnostic::error(format!("cannot start the AWS client: {e}")))?;
            runtime.block_on(async {
                let addresses = describe_instances(&endpoint, &ec2_ids, state).await?;
                let mut fetched = Vec::new();
                for f in &fetch {
                    fetched.push(get_server_certificate(&endpoint, f, state).await?);
                }
                Ok::<_, Diagnostic>((addresses, fetched))
            })
        })
        .join()
        .unwrap_or_else(|_| Err(Diagnostic::error("the AWS client stopped unexpectedly")))
    })?;
    resolved.addresses.extend(addresses);
    for (f, files) in fetch.iter().zip(fetched) {
        resolved.warnings.push(src.warning(
            format!(
                "server certificate \"{}\" fetched from IAM and saved as {}",
                f.cert.name,
                files.certificate.display()
            ),
            f.cert.span.clone(),
        ));
        resolved.certs.insert(f.cert.id.clone(), files);
    }
    Ok(resolved)
}

enum Local {
    Found(CertFiles),
    /// Not on disk: fetch the body and chain from IAM, into `dir`, for this key.
    Fetch {
        key: PathBuf,
        dir: PathBuf,
    },
}

fn local_certificate(
    cert: &CertRef,
    state: &State,
    options: &Options,
) -> Result<Local, Diagnostic> {
    let src = &state.src;
    if let Some(upload) = state.uploads.get(&cert.name) {
        let readable = |(path, span): &(PathBuf, Range<usize>)| -> Result<PathBuf, Diagnostic> {
            std::fs::metadata(path).map_err(|e| {
                src.error(
                    format!(
                        "iam-servercertupload: \"{}\" cannot be read ({})",
                        path.display(),
                        describe_io_error(&e)
                    ),
                    span.clone(),
                )
            })?;
            Ok(path.clone())
        };
        return Ok(Local::Found(CertFiles {
            certificate: readable(&upload.body)?,
            key: readable(&upload.key)?,
            chain: upload.chain.as_ref().map(readable).transpose()?,
        }));
    }
    let first =
        |dir: &Path, names: &[String]| names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
    let name = &cert.name;
    if let Some(dir) = &options.cert_dir {
        let key = first(dir, &[format!("{name}.key")]);
        let body = first(dir, &[format!("{name}.crt"), format!("{name}.pem")]);
        let chain = first(
            dir,
            &[format!("{name}.chain.crt"), format!("{name}.chain.pem")],
        );
        match (body, key) {
            (Some(certificate), Some(key)) => {
                return Ok(Local::Found(CertFiles {
                    certificate,
                    key,
                    chain,
                }))
            }
            (Some(_), None) => {
                return Err(src.error(
                    format!(
                        "the certificate \"{name}\" is in {} but its key {name}.key is not",
                        dir.display()
                    ),
                    cert.span.clone(),
                ))
            }
            (None, Some(key)) if !cert.acm => {
                return Ok(Local::Fetch {
                    key,
                    dir: dir.clone(),
                })
            }
            _ => {}
        }
    }
    let why = if cert.acm {
        format!("ACM certificates are not fetched: put {name}.crt and {name}.key in --cert-dir")
    } else {
        format!(
            "its private key is needed and IAM never returns private keys: add the script's iam-servercertupload line (-b, -k) or put {name}.key (and {name}.crt, or let it be fetched from IAM) in --cert-dir"
        )
    };
    Err(src.error(
        format!("the certificate \"{}\" cannot be found: {why}", cert.id),
        cert.span.clone(),
    ))
}

async fn describe_instances(
    endpoint: &Endpoint,
    ids: &[(String, Range<usize>)],
    state: &State,
) -> Result<HashMap<String, IpAddr>, Diagnostic> {
    let mut found = HashMap::new();
    if ids.is_empty() {
        return Ok(found);
    }
    let src = &state.src;
    let names: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    let client = aws::ec2_client(endpoint).await;
    let mut pages = client
        .describe_instances()
        .set_instance_ids(Some(names.clone()))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            let err = aws::explain("ec2:DescribeInstances", Some(&names.join(",")), &e);
            let text = err.to_string();
            // Point at the instance the service complained about, if it named one.
            let span = ids
                .iter()
                .find(|(id, _)| err.detail.contains(id.as_str()))
                .unwrap_or(&ids[0])
                .1
                .clone();
            src.error(text, span)
        })?;
        for reservation in page.reservations() {
            for instance in reservation.instances() {
                let (Some(id), Some(ip)) = (instance.instance_id(), instance.private_ip_address())
                else {
                    continue;
                };
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    found.insert(id.to_string(), ip);
                }
            }
        }
    }
    for (id, span) in ids {
        if !found.contains_key(id) {
            return Err(src.error(
                format!("AWS call ec2:DescribeInstances returned no private address for {id}: is it terminated, or in another region?"),
                span.clone(),
            ));
        }
    }
    Ok(found)
}

async fn get_server_certificate(
    endpoint: &Endpoint,
    f: &Fetch,
    state: &State,
) -> Result<CertFiles, Diagnostic> {
    let src = &state.src;
    let client = aws::iam_client(endpoint).await;
    let out = client
        .get_server_certificate()
        .server_certificate_name(&f.cert.name)
        .send()
        .await
        .map_err(|e| {
            let err = aws::explain("iam:GetServerCertificate", Some(&f.cert.name), &e);
            src.error(err.to_string(), f.cert.span.clone())
        })?;
    let cert = out.server_certificate().ok_or_else(|| {
        src.error(
            format!(
                "AWS call iam:GetServerCertificate returned no certificate for {}",
                f.cert.name
            ),
            f.cert.span.clone(),
        )
    })?;
    let write = |path: PathBuf, text: &str| -> Result<PathBuf, Diagnostic> {
        let mut text = text.trim_end().to_string();
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| {
            src.error(
                format!(
                    "cannot save the fetched certificate as {} ({})",
                    path.display(),
                    describe_io_error(&e)
                ),
                f.cert.span.clone(),
            )
        })?;
        Ok(path)
    };
    let name = &f.cert.name;
    let certificate = write(f.dir.join(format!("{name}.crt")), cert.certificate_body())?;
    let chain = cert
        .certificate_chain()
        .filter(|c| !c.trim().is_empty())
        .map(|c| write(f.dir.join(format!("{name}.chain.crt")), c))
        .transpose()?;
    Ok(CertFiles {
        certificate,
        key: f.key.clone(),
        chain,
    })
}

/// Reads `--instances-file`: `ID ADDRESS` lines, or JSON (see the module notes).
pub fn read_instances_file(path: &Path) -> Result<HashMap<String, IpAddr>, Diagnostic> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostic::error(format!(
            "open() \"{shown}\" failed ({})",
            describe_io_error(&e)
        ))
    })?;
    let name = path.to_string_lossy();
    let at = |line: usize| crate::config::Origin::new(&*name, line as u32, 1);
    let address = |ip: &str, line: usize| -> Result<IpAddr, Diagnostic> {
        ip.parse()
            .map_err(|_| Diagnostic::error(format!("\"{ip}\" is not an IP address")).at(at(line)))
    };
    let mut table = HashMap::new();
    if text.trim_start().starts_with(['{', '[']) {
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Diagnostic::error(format!("the instances file is not valid JSON: {e}")).at(at(e.line()))
        })?;
        collect_json(&json, &mut table);
        if table.is_empty() {
            if let Some(map) = json.as_object() {
                for (id, ip) in map {
                    let ip = ip.as_str().ok_or_else(|| {
                        Diagnostic::error(format!("the address of \"{id}\" is not a string"))
                            .at(at(1))
                    })?;
                    table.insert(id.clone(), address(ip, 1)?);
                }
            }
        }
        return Ok(table);
    }
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, ip] = fields.as_slice() else {
            return Err(
                Diagnostic::error(format!("\"{line}\" is not \"INSTANCE-ID ADDRESS\""))
                    .at(at(i + 1)),
            );
        };
        out.insert(id.to_string(), address(ip, i + 1)?);
    }
    Ok(out)
}

/// Every object with `InstanceId` and `PrivateIpAddress`, at any depth.
fn collect_json(value: &serde_json::Value, table: &mut HashMap<String, IpAddr>) {
    match value {
        serde_json::Value::Object(map) => {
            if let (Some(id), Some(ip)) = (
                map.get("InstanceId").and_then(|v| v.as_str()),
                map.get("PrivateIpAddress").and_then(|v| v.as_str()),
            ) {
                if let Ok(ip) = ip.parse() {
                    table.insert(id.to_string(), ip);
                }
            }
            map.values().for_each(|v| collect_json(v, table));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_json(v, table)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("elb-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn instances_file_forms() {
        let t = read_instances_file(&file(
            "a.txt",
            "# comment\ni-1 10.0.0.1\n\ni-2\t10.0.0.2 # web\n",
        ))
        .unwrap();
        assert_eq!(t["i-2"], "10.0.0.2".parse::<IpAddr>().unwrap());
        let t = read_instances_file(&file("b.json", r#"{"i-1": "10.0.0.1", "i-2": "fd00::2"}"#))
            .unwrap();
        assert_eq!(t.len(), 2);
        let t = read_instances_file(&file(
            "c.json",
            r#"{"Reservations":[{"Instances":[{"InstanceId":"i-9","PrivateIpAddress":"10.1.2.3","State":{"Name":"running"}}]}]}"#,
        ))
        .unwrap();
        assert_eq!(t["i-9"].to_string(), "10.1.2.3");
        let e = read_instances_file(&file("d.txt", "i-1 10.0.0.1\ni-2 nowhere\n")).unwrap_err();
        assert_eq!(e.message, "\"nowhere\" is not an IP address");
        assert_eq!(e.origin.unwrap().line, 2);
        assert!(read_instances_file(&file("e.txt", "i-1\n")).is_err());
        assert!(read_instances_file(Path::new("/nonexistent/x")).is_err());
    }
}
