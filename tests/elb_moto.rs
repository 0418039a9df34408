//! ELB scripts resolved against AWS, played by moto's server on loopback: instances created
//! there resolve to their private addresses, a server certificate uploaded there is fetched
//! (body and chain; the key from a local file), an unknown instance and a missing permission
//! are errors that name the call and the resource.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use appliance::config::Appliance;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use support::ChildGuard;

/// moto's server: the project's .venv first (scripts/test-all makes it), then PATH.
fn moto_server_bin() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("moto_server"))
                .find(|p| p.is_file())
        })
        .expect("moto_server was not found in .venv/bin or on PATH: run scripts/test-all")
}

struct Moto {
    _child: ChildGuard,
    url: String,
}

/// Starts moto on 127.0.0.1; with `free_actions`, IAM authorization is enforced after that many
/// requests.
fn moto(free_actions: Option<u32>) -> Moto {
    let port = support::free_port();
    let mut command = Command::new(moto_server_bin());
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(n) = free_actions {
        command.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
    }
    let child = ChildGuard::spawn("moto_server", &mut command);
    support::wait_for_port(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(30),
    );
    Moto {
        _child: child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn sdk(url: &str, key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .load()
        .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "elb-moto-{tag}-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate and key, as PEM text.
fn self_signed(dir: &Path, name: &str) -> (String, String) {
    let (crt, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success());
    (
        std::fs::read_to_string(crt).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

/// Runs `appliance migrate` on a script, with the given credentials and nothing else from this
/// machine's AWS setup.
fn migrate(moto: &Moto, script: &Path, extra: &[&str], key: &str, secret: &str) -> Output {
    let home = script.parent().unwrap();
    Command::new(support::appliance_bin())
        .arg("migrate")
        .arg(script)
        .args(["--aws-endpoint", &moto.url, "--region", "us-east-1"])
        .args(extra)
        .env_clear()
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

/// Two instances and an uploaded certificate; returns (instance id, private address) pairs and
/// the certificate's body and chain.
async fn populate(url: &str, dir: &Path) -> (Vec<(String, String)>, String, String) {
    let config = sdk(url, "testing", "testing").await;
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let images = ec2.describe_images().send().await.unwrap();
    let image = images.images()[0].image_id().unwrap().to_string();
    let run = ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::T2Micro)
        .min_count(2)
        .max_count(2)
        .send()
        .await
        .unwrap();
    let instances = run
        .instances()
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap().to_string(),
                i.private_ip_address().unwrap().to_string(),
            )
        })
        .collect();
    let (body, key) = self_signed(dir, "moto-cert");
    let (chain, _) = self_signed(dir, "moto-chain");
    aws_sdk_iam::Client::new(&config)
        .upload_server_certificate()
        .server_certificate_name("moto-cert")
        .certificate_body(&body)
        .private_key(&key)
        .certificate_chain(&chain)
        .send()
        .await
        .unwrap();
    (instances, body, chain)
}

const CERT_ARN: &str = "arn:aws:iam::123456789012:server-certificate/moto-cert";

#[test]
fn instances_and_certificate_resolve_through_the_sdk() {
    let moto = moto(None);
    let dir = temp_dir("resolve");
    let (instances, body, chain) = runtime().block_on(populate(&moto.url, &dir));
    // The key is local: IAM never returns it.
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(dir.join("moto-cert-key.pem"), certs.join("moto-cert.key")).unwrap();
    let ids: Vec<&str> = instances.iter().map(|(id, _)| id.as_str()).collect();
    let script = dir.join("lb.sh");
    std::fs::write(
        &script,
        format!(
            "elb-create-lb web --listener \"protocol=HTTP, lb-port=80, instance-port=8080\" \\\n  --listener \"protocol=HTTPS, lb-port=443, instance-port=8080, cert-id={CERT_ARN}\"\nelb-register-instances-with-lb web --instances {}\n",
            ids.join(",")
        ),
    )
    .unwrap();
    let out = migrate(
        &moto,
        &script,
        &["--cert-dir", certs.to_str().unwrap()],
        "testing",
        "testing",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let model = Appliance::from_toml(&String::from_utf8_lossy(&out.stdout), "out.toml").unwrap();
    let servers: Vec<&str> = model.http.upstreams[0]
        .servers
        .iter()
        .map(|s| s.address.as_str())
        .collect();
    let expected: Vec<String> = instances
        .iter()
        .map(|(_, ip)| format!("{ip}:8080"))
        .collect();
    assert_eq!(servers, expected);
    let cert = &model.http.servers[1].tls.certificates.as_ref().unwrap()[0];
    assert_eq!(cert.certificate, certs.join("moto-cert.crt"));
    assert_eq!(cert.key, certs.join("moto-cert.key"));
    let fetched = std::fs::read_to_string(&cert.certificate).unwrap();
    assert_eq!(fetched.trim(), body.trim());
    let fetched_chain = std::fs::read_to_string(cert.chain.as_ref().unwrap()).unwrap();
    assert_eq!(fetched_chain.trim(), chain.trim());
    assert!(stderr.contains("fetched from IAM and saved as"), "{stderr}");
}

#[test]
fn an_unknown_instance_names_the_call_and_the_id() {
    let moto = moto(None);
    let dir = temp_dir("unknown");
    let script = dir.join("lb.sh");
    std::fs::write(
        &script,
        "elb-create-lb web --listener \"protocol=TCP, lb-port=22, instance-port=22\"\nelb-register-instances-with-lb web --instances i-0123456789abcdef0\n",
    )
    .unwrap();
    let out = migrate(&moto, &script, &[], "testing", "testing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("AWS call ec2:DescribeInstances failed for i-0123456789abcdef0: not found (InvalidInstanceID.NotFound"),
        "{stderr}"
    );
    assert!(stderr.contains("lb.sh:2"), "{stderr}");
}

#[test]
fn a_certificate_without_a_local_key_is_refused_before_any_call() {
    let moto = moto(None);
    let dir = temp_dir("nokey");
    let script = dir.join("lb.sh");
    std::fs::write(
        &script,
        format!("elb-create-lb web --listener \"protocol=SSL, lb-port=443, instance-port=443, cert-id={CERT_ARN}\"\n"),
    )
    .unwrap();
    let out = migrate(&moto, &script, &[], "testing", "testing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the certificate \"arn:aws:iam::123456789012:server-certificate/moto-cert\" cannot be found")
            && stderr.contains("IAM never returns private keys"),
        "{stderr}"
    );
}

#[test]
fn a_missing_permission_names_the_call_and_the_permission() {
    // Two requests without authorization: the user and its key. After them moto enforces IAM.
    let moto = moto(Some(2));
    let (key, secret) = runtime().block_on(async {
        let iam = aws_sdk_iam::Client::new(&sdk(&moto.url, "testing", "testing").await);
        iam.create_user().user_name("limited").send().await.unwrap();
        let key = iam
            .create_access_key()
            .user_name("limited")
            .send()
            .await
            .unwrap();
        let key = key.access_key().unwrap();
        (
            key.access_key_id().to_string(),
            key.secret_access_key().to_string(),
        )
    });
    let dir = temp_dir("denied");
    let script = dir.join("lb.sh");
    std::fs::write(
        &script,
        "elb-create-lb web --listener \"protocol=HTTP, lb-port=80, instance-port=80\"\nelb-register-instances-with-lb web --instances i-0123456789abcdef0\n",
    )
    .unwrap();
    let out = migrate(&moto, &script, &[], &key, &secret);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("AWS call ec2:DescribeInstances failed for i-0123456789abcdef0: permission denied; the role or user needs the IAM permission \"ec2:DescribeInstances\""),
        "{stderr}"
    );

    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(certs.join("moto-cert.key"), "not needed before the call\n").unwrap();
    std::fs::write(
        &script,
        format!("elb-create-lb web --listener \"protocol=HTTPS, lb-port=443, instance-port=80, cert-id={CERT_ARN}\"\n"),
    )
    .unwrap();
    let out = migrate(
        &moto,
        &script,
        &["--cert-dir", certs.to_str().unwrap()],
        &key,
        &secret,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("AWS call iam:GetServerCertificate failed for moto-cert: permission denied; the role or user needs the IAM permission \"iam:GetServerCertificate\""),
        "{stderr}"
    );
}
