//! The ec2 back end and `appliance iam setup` against moto's server, with an IMDSv2 stand-in of
//! our own (moto has no metadata service on the network).
//!
//! moto_server is found in `$CARGO_MANIFEST_DIR/.venv/bin` (made by scripts/test-all), else on
//! PATH; without it these tests fail and say so.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appliance::aws::imds::{self, Identity};
use appliance::ha::ec2::{self, Ec2Vip};
use appliance::ha::{Holder, VipBackend};
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::DomainType;
use support::{appliance_bin, free_port, wait_for_port, ChildGuard};

const VIP: &str = "10.0.1.100";

fn moto_server_bin() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("moto_server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "moto_server was found neither in .venv/bin nor on PATH: run scripts/test-all \
                 or `python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt`"
            )
        })
}

struct Moto {
    url: String,
    _guard: ChildGuard,
}

fn start_moto() -> Moto {
    let port = free_port();
    let guard = ChildGuard::spawn(
        "moto_server",
        Command::new(moto_server_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_for_port(
        format!("127.0.0.1:{port}").parse().expect("address"),
        Duration::from_secs(30),
    );
    Moto {
        url: format!("http://127.0.0.1:{port}"),
        _guard: guard,
    }
}

fn credentials(key: &str, secret: &str) -> Credentials {
    Credentials::new(key, secret, None, None, "test")
}

fn ec2_client(url: &str, creds: Credentials) -> aws_sdk_ec2::Client {
    let builder = aws_sdk_ec2::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(creds);
    aws_sdk_ec2::Client::from_conf(ec2::tune(builder))
}

fn iam_client(url: &str, creds: Credentials) -> aws_sdk_iam::Client {
    let conf = aws_sdk_iam::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(creds)
        .build();
    aws_sdk_iam::Client::from_conf(conf)
}

/// A VPC, a subnet, two instances, the VIP on A's interface and an Elastic IP on the VIP.
struct World {
    a: Identity,
    b: Identity,
    allocation: String,
}

async fn build_world(ec2: &aws_sdk_ec2::Client) -> World {
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("CreateVpc")
        .vpc
        .and_then(|v| v.vpc_id)
        .expect("a VPC id");
    let subnet = ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .expect("CreateSubnet")
        .subnet
        .and_then(|s| s.subnet_id)
        .expect("a subnet id");
    let image = ec2
        .describe_images()
        .send()
        .await
        .expect("DescribeImages")
        .images
        .unwrap_or_default()
        .into_iter()
        .find_map(|i| i.image_id)
        .expect("moto ships images");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let instance = ec2
            .run_instances()
            .image_id(&image)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .subnet_id(&subnet)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances")
            .instances
            .unwrap_or_default()
            .into_iter()
            .next()
            .expect("one instance");
        let eni = instance
            .network_interfaces()
            .first()
            .expect("a primary interface");
        nodes.push(Identity {
            instance_id: instance.instance_id().expect("an id").to_string(),
            region: "us-east-1".to_string(),
            mac: eni.mac_address().expect("a MAC").to_string(),
            eni_id: eni.network_interface_id().expect("an ENI id").to_string(),
        });
    }
    let b = nodes.pop().expect("two nodes");
    let a = nodes.pop().expect("two nodes");
    ec2.assign_private_ip_addresses()
        .network_interface_id(&a.eni_id)
        .private_ip_addresses(VIP)
        .send()
        .await
        .expect("AssignPrivateIpAddresses");
    let allocation = ec2
        .allocate_address()
        .domain(DomainType::Vpc)
        .send()
        .await
        .expect("AllocateAddress")
        .allocation_id
        .expect("an allocation id");
    ec2.associate_address()
        .allocation_id(&allocation)
        .network_interface_id(&a.eni_id)
        .private_ip_address(VIP)
        .send()
        .await
        .expect("AssociateAddress");
    World { a, b, allocation }
}

/// What moto says: the interfaces listing the VIP, and the Elastic IP's interface.
async fn moto_view(ec2: &aws_sdk_ec2::Client, w: &World) -> (Vec<String>, Option<String>) {
    let mut listing = Vec::new();
    for eni in [&w.a.eni_id, &w.b.eni_id] {
        let answer = ec2
            .describe_network_interfaces()
            .network_interface_ids(eni)
            .send()
            .await
            .expect("DescribeNetworkInterfaces");
        let lists = answer.network_interfaces().iter().any(|i| {
            i.private_ip_addresses()
                .iter()
                .any(|a| a.private_ip_address() == Some(VIP))
        });
        if lists {
            listing.push(eni.clone());
        }
    }
    let eip = ec2
        .describe_addresses()
        .allocation_ids(&w.allocation)
        .send()
        .await
        .expect("DescribeAddresses")
        .addresses()
        .first()
        .and_then(|a| a.network_interface_id())
        .map(str::to_string);
    (listing, eip)
}

/// An IMDSv2 stand-in for one instance: PUT /latest/api/token, then GETs that must carry the
/// token. Counts what it served, so the test can tell IMDSv2 was really used.
struct Imds {
    url: String,
    served: Arc<Mutex<Vec<String>>>,
}

fn start_imds(me: &Identity) -> Imds {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the IMDS stand-in");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let mut paths = HashMap::new();
    paths.insert(
        "/latest/meta-data/instance-id".to_string(),
        me.instance_id.clone(),
    );
    paths.insert(
        "/latest/meta-data/placement/region".to_string(),
        me.region.clone(),
    );
    paths.insert("/latest/meta-data/mac".to_string(), me.mac.clone());
    paths.insert(
        format!(
            "/latest/meta-data/network/interfaces/macs/{}/interface-id",
            me.mac
        ),
        me.eni_id.clone(),
    );
    let served = Arc::new(Mutex::new(Vec::new()));
    let log = served.clone();
    std::thread::spawn(move || {
        const TOKEN: &str = "stand-in-token";
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut headers = HashMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let mut words = request_line.split_whitespace();
            let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            let (status, body) = match (method, path) {
                ("PUT", "/latest/api/token")
                    if headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
                {
                    ("200 OK", TOKEN.to_string())
                }
                ("PUT", _) => ("400 Bad Request", String::new()),
                ("GET", p)
                    if headers.get("x-aws-ec2-metadata-token").map(String::as_str)
                        != Some(TOKEN) =>
                {
                    let _ = p;
                    ("401 Unauthorized", String::new())
                }
                ("GET", p) => match paths.get(p) {
                    Some(v) => ("200 OK", v.clone()),
                    None => ("404 Not Found", String::new()),
                },
                _ => ("405 Method Not Allowed", String::new()),
            };
            log.lock()
                .expect("log")
                .push(format!("{method} {path} {status}"));
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nx-aws-ec2-metadata-token-ttl-seconds: 21600\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Imds { url, served }
}

fn ha_toml(world: &World, me_imds: &str, moto: &str) -> String {
    format!(
        "[ha]\nmode = \"ec2\"\npeer = \"127.0.0.1:{}\"\nbind = \"127.0.0.1:{}\"\nvip = \"{VIP}\"\n\
         eip_allocation_id = \"{}\"\nimds_endpoint = \"{me_imds}\"\nec2_endpoint = \"{moto}\"\n\
         region = \"us-east-1\"\n",
        free_port(),
        free_port(),
        world.allocation
    )
}

fn ha_config(world: &World, me_imds: &str, moto: &str) -> appliance::config::Ha {
    let text = ha_toml(world, me_imds, moto);
    let model = appliance::config::Appliance::from_toml(&text, "ha.toml").expect("valid TOML");
    appliance::config::validate(&model).expect("a valid [ha] section");
    model.ha.expect("an [ha] section")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_moves_the_vip_and_the_elastic_ip_and_reads_back() {
    let moto = start_moto();
    let ec2 = ec2_client(&moto.url, credentials("testing", "testing"));
    let w = build_world(&ec2).await;
    assert_eq!(
        moto_view(&ec2, &w).await,
        (vec![w.a.eni_id.clone()], Some(w.a.eni_id.clone()))
    );

    // B learns who it is from its metadata service, over IMDSv2.
    let imds_b = start_imds(&w.b);
    let me = imds::identity(Some(&imds_b.url))
        .await
        .expect("IMDS answers");
    assert_eq!(me, w.b);
    let served = imds_b.served.lock().expect("log").clone();
    assert!(
        served.iter().any(|s| s == "PUT /latest/api/token 200 OK"),
        "{served:?}"
    );
    assert!(
        served
            .iter()
            .filter(|s| s.starts_with("GET"))
            .all(|s| s.ends_with("200 OK")),
        "{served:?}"
    );

    let cfg = ha_config(&w, &imds_b.url, &moto.url);
    let mut b = Ec2Vip::new(&cfg, ec2.clone(), me)
        .await
        .expect("B's back end");
    let mut a = Ec2Vip::new(&cfg, ec2.clone(), w.a.clone())
        .await
        .expect("A's back end");

    // Before: A holds it, as both read it.
    let before = b.read(true).await.expect("B reads ownership");
    assert!(
        matches!(
            before.holder,
            Holder::Other {
                live: true,
                we_win: false
            }
        ),
        "{before:?}"
    );
    assert!(before.detail.contains(&w.a.eni_id), "{before:?}");
    assert_eq!(a.read(false).await.expect("A reads").holder, Holder::Us);

    // The take-over.
    let after = b.claim().await.expect("B takes over");
    assert_eq!(after.holder, Holder::Us, "{after:?}");
    println!("after the take-over B reads: {}", after.detail);
    assert!(!after.detail.contains("also listed"), "{after:?}");
    let (listing, eip) = moto_view(&ec2, &w).await;
    assert_eq!(
        eip,
        Some(w.b.eni_id.clone()),
        "the Elastic IP is on B's interface"
    );
    assert!(
        listing.contains(&w.b.eni_id),
        "moto lists the VIP on B: {listing:?}"
    );
    assert!(
        !listing.contains(&w.a.eni_id),
        "and no longer on A: {listing:?}"
    );

    // A reads the move back and would not fight: the arbiter never lets it win.
    let seen_by_a = a.read(false).await.expect("A reads");
    assert!(
        matches!(seen_by_a.holder, Holder::Other { we_win: false, .. }),
        "{seen_by_a:?}"
    );
    assert!(seen_by_a.detail.contains(&w.b.eni_id), "{seen_by_a:?}");
    // Claiming what it holds costs nothing and changes nothing.
    assert_eq!(b.claim().await.expect("idempotent").holder, Holder::Us);
    // Releasing on demotion unassigns the VIP from B's own interface only.
    b.release().await.expect("B releases");
    let (listing, _) = moto_view(&ec2, &w).await;
    assert!(listing.is_empty(), "{listing:?}");
    assert_eq!(a.read(false).await.expect("A reads").holder, Holder::Nobody);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_call_and_the_missing_permission() {
    let moto = start_moto();
    let root = credentials("testing", "testing");
    let ec2 = ec2_client(&moto.url, root.clone());
    let w = build_world(&ec2).await;

    // An allocation id that does not exist: the read names the call and the resource.
    let imds_b = start_imds(&w.b);
    let mut cfg = ha_config(&w, &imds_b.url, &moto.url);
    cfg.eip_allocation_id = Some("eipalloc-00000000000000000".to_string());
    let mut b = Ec2Vip::new(&cfg, ec2.clone(), w.b.clone())
        .await
        .expect("B's back end");
    let e = b
        .read(false)
        .await
        .expect_err("no such allocation")
        .to_string();
    println!("{e}");
    assert!(
        e.contains("ec2:DescribeAddresses") && e.contains("eipalloc-00000000000000000"),
        "{e}"
    );

    // A user allowed to read and to assign, but not to associate the Elastic IP.
    let iam = iam_client(&moto.url, root);
    iam.create_user()
        .user_name("ha-node")
        .send()
        .await
        .expect("CreateUser");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["ec2:DescribeNetworkInterfaces", "ec2:DescribeAddresses",
                       "ec2:DescribeInstances", "ec2:AssignPrivateIpAddresses",
                       "ec2:UnassignPrivateIpAddresses"],
            "Resource": "*"
        }]
    });
    iam.put_user_policy()
        .user_name("ha-node")
        .policy_name("almost")
        .policy_document(policy.to_string())
        .send()
        .await
        .expect("PutUserPolicy");
    let key = iam
        .create_access_key()
        .user_name("ha-node")
        .send()
        .await
        .expect("CreateAccessKey")
        .access_key
        .expect("a key");
    // From here on moto checks every request against IAM.
    let mut enforce = TcpStream::connect(moto.url.trim_start_matches("http://")).expect("moto");
    write!(
        enforce,
        "POST /moto-api/reset-auth HTTP/1.1\r\nHost: moto\r\nContent-Length: 1\r\nConnection: close\r\n\r\n0"
    )
    .expect("ask moto to enforce IAM");
    let mut answer = String::new();
    let _ = enforce.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let limited = ec2_client(
        &moto.url,
        credentials(key.access_key_id(), key.secret_access_key()),
    );
    let cfg = ha_config(&w, &imds_b.url, &moto.url);
    let mut b = Ec2Vip::new(&cfg, limited, w.b.clone())
        .await
        .expect("B can read");
    let e = b
        .claim()
        .await
        .expect_err("the association is denied")
        .to_string();
    println!("{e}");
    assert!(e.contains("ec2:AssociateAddress"), "{e}");
    assert!(e.contains("permission denied"), "{e}");
    assert!(e.contains(&w.allocation), "{e}");

    // The whole agent with those credentials: it stays out of master and its status says why.
    let dir = std::env::temp_dir().join(format!("ha-deny-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let config_path = dir.join("b.toml");
    std::fs::write(&config_path, ha_toml(&w, &imds_b.url, &moto.url)).expect("write the config");
    let status_path = dir.join("status.json");
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind the probe target");
    let probe_url = format!("http://{}/", probe.local_addr().expect("address"));
    std::thread::spawn(move || {
        for mut s in probe.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let _agent = ChildGuard::spawn(
        "appliance ha-agent",
        Command::new(appliance_bin())
            .arg("ha-agent")
            .arg("-c")
            .arg(&config_path)
            .args(["--probe", &probe_url])
            .arg("--status-file")
            .arg(&status_path)
            .env("AWS_ACCESS_KEY_ID", key.access_key_id())
            .env("AWS_SECRET_ACCESS_KEY", key.secret_access_key())
            .env_remove("AWS_PROFILE"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let text = std::fs::read_to_string(&status_path).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if v["last_error"].is_string() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ec2:AssociateAddress") && error.contains("permission denied"),
        "{status}"
    );
    assert_eq!(status["state"], "backup", "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole agent: B's `appliance ha-agent` with B's metadata stand-in and a silent peer
/// finds A holding the VIP, takes it over through moto, and gives it up when stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_takes_over_from_a_silent_peer_and_releases_on_stop() {
    let moto = start_moto();
    let ec2 = ec2_client(&moto.url, credentials("testing", "testing"));
    let w = build_world(&ec2).await;
    let imds_b = start_imds(&w.b);

    // B's "data plane": anything that answers 200.
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind the probe target");
    let probe_url = format!("http://{}/", probe.local_addr().expect("address"));
    std::thread::spawn(move || {
        for mut s in probe.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });

    let dir = std::env::temp_dir().join(format!("ha-ec2-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let toml = ha_toml(&w, &imds_b.url, &moto.url);
    let config_path = dir.join("b.toml");
    std::fs::write(&config_path, toml).expect("write the config");
    let status_path = dir.join("status.json");
    let mut agent = ChildGuard::spawn(
        "appliance ha-agent",
        Command::new(appliance_bin())
            .arg("ha-agent")
            .arg("-c")
            .arg(&config_path)
            .args(["--probe", &probe_url])
            .arg("--status-file")
            .arg(&status_path)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE"),
    );

    // The take-over ends with the VIP on B's interface alone: moto, unlike AWS, leaves it listed
    // on A's too when it is reassigned, and the agent unassigns it there after moving the
    // Elastic IP. Wait for the end state, not for the Elastic IP alone.
    let taken_over = (vec![w.b.eni_id.clone()], Some(w.b.eni_id.clone()));
    let started = Instant::now();
    let mut view = moto_view(&ec2, &w).await;
    while view != taken_over && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = moto_view(&ec2, &w).await;
    }
    println!("take-over seen in moto after {:?}", started.elapsed());
    assert_eq!(view, taken_over);
    let status: serde_json::Value = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = std::fs::read_to_string(&status_path).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
            if v["state"] == "master" || Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    println!("{status}");
    assert_eq!(status["state"], "master");
    assert_eq!(
        status["node_id"],
        w.b.instance_id.as_str(),
        "the default node id is the instance id"
    );
    assert_eq!(status["vip_holder"]["holder"], "us");

    // SIGTERM: the agent releases the VIP from its own interface before it exits.
    let pid = agent.pid().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent.child.try_wait().ok().flatten().is_some(),
        "the agent stops on SIGTERM"
    );
    let (listing, _) = moto_view(&ec2, &w).await;
    assert!(listing.is_empty(), "released on stop: {listing:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_setup_twice_leaves_one_role_one_policy_one_profile() {
    let moto = start_moto();
    let run = || {
        let out = Command::new(appliance_bin())
            .args([
                "iam",
                "setup",
                "--role-name",
                "lb-ha",
                "--profile-name",
                "lb-ha-profile",
            ])
            .args(["--aws-endpoint", &moto.url, "--region", "us-east-1"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("run appliance iam setup");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let first = run();
    println!("first run:\n{first}");
    assert_eq!(first.matches(": created").count(), 4, "{first}");
    let second = run();
    println!("second run:\n{second}");
    assert_eq!(second.matches(": found").count(), 4, "{second}");

    let iam = iam_client(&moto.url, credentials("testing", "testing"));
    let roles: Vec<String> = iam
        .list_roles()
        .send()
        .await
        .expect("ListRoles")
        .roles()
        .iter()
        .map(|r| r.role_name().to_string())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| *r == "lb-ha").count(),
        1,
        "{roles:?}"
    );
    let policies = iam
        .list_role_policies()
        .role_name("lb-ha")
        .send()
        .await
        .expect("ListRolePolicies")
        .policy_names()
        .to_vec();
    assert_eq!(policies, ["appliance-ha"]);
    let profiles = iam
        .list_instance_profiles()
        .send()
        .await
        .expect("ListInstanceProfiles");
    let ours: Vec<_> = profiles
        .instance_profiles()
        .iter()
        .filter(|p| p.instance_profile_name() == "lb-ha-profile")
        .collect();
    assert_eq!(ours.len(), 1);
    let members: Vec<&str> = ours[0].roles().iter().map(|r| r.role_name()).collect();
    assert_eq!(members, ["lb-ha"]);

    // The policy printed is the policy set.
    let printed = Command::new(appliance_bin())
        .args(["iam", "policy"])
        .output()
        .expect("iam policy");
    let printed: serde_json::Value = serde_json::from_slice(&printed.stdout).expect("JSON");
    let stored = iam
        .get_role_policy()
        .role_name("lb-ha")
        .policy_name("appliance-ha")
        .send()
        .await
        .expect("GetRolePolicy");
    let text = stored.policy_document();
    let decoded = percent_encoding::percent_decode_str(text).decode_utf8_lossy();
    let stored: serde_json::Value = serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(&decoded))
        .expect("a JSON document");
    assert_eq!(stored, printed);
}
