//! First boot: the appliance configures itself from its EC2 user data, so an instance launched
//! from the image serves with no login.
//!
//! The config directory holds the image's placeholder (`default.conf`), one directory per applied
//! user data (`user-data.<crc>/`, the main config and its includes), and `config`, a relative
//! symlink to the main config that `appliance.service` runs. Switching is one rename of that
//! symlink, done only after the new config compiled and validated, so a bad user data leaves the
//! previous config (at first, the placeholder) in place. Nothing here may stop the boot: every
//! failure is an [`Outcome`] with a sentence, never a panic.

pub mod imds;
pub mod user_data;

use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::compile::{self, render::render_toml, InputKind, Options};
use user_data::{NotUsed, UserData};

/// Where first boot reads and writes.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The config directory, `/etc/appliance`.
    pub etc: PathBuf,
    /// Where the last applied user data is kept, `/var/lib/appliance-firstboot` (root's; the
    /// service's own state directory, `/var/lib/appliance`, belongs to its user).
    pub state: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            etc: PathBuf::from("/etc/appliance"),
            state: PathBuf::from("/var/lib/appliance-firstboot"),
        }
    }
}

impl Layout {
    /// The symlink the service runs.
    pub fn config_link(&self) -> PathBuf {
        self.etc.join("config")
    }

    fn applied_copy(&self) -> PathBuf {
        self.state.join("user-data.applied")
    }
}

/// What first boot did, each with what an operator reading the journal needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The user data's config is now the one `config` points at.
    Applied { main: PathBuf, kind: InputKind },
    /// The same user data as last time, already applied: nothing to do.
    Unchanged { main: PathBuf },
    /// No user data, or user data for another tool: the current config stays.
    Kept(String),
    /// The user data is for the appliance but does not work: the current config stays.
    Rejected(String),
}

impl Outcome {
    /// Only rejected user data is a failure the unit should show; the boot goes on regardless.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Rejected(_))
    }
}

/// Applies user data: parse, write into a directory of its own, compile and validate it as
/// `appliance check` would, merge `[ha]`/`[admin]`, then point `config` at it.
pub fn apply(layout: &Layout, text: &str) -> Outcome {
    if let Some(main) = already_applied(layout, text) {
        return Outcome::Unchanged { main };
    }
    let data = match user_data::parse(text) {
        Ok(data) => data,
        Err(NotUsed::Empty) => return Outcome::Kept("the user data is empty".into()),
        Err(NotUsed::Foreign(what)) => {
            return Outcome::Kept(format!("the user data is {what}, not the appliance's"))
        }
        Err(NotUsed::Invalid(why)) => return Outcome::Rejected(why),
    };
    let dir_name = format!(
        "user-data.{:08x}",
        crc32fast::hash(text.as_bytes()) ^ text.len() as u32
    );
    let dir = layout.etc.join(&dir_name);
    let main = match write_and_check(&dir, &data) {
        Ok(main) => main,
        Err(why) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Outcome::Rejected(why);
        }
    };
    let target = Path::new(&dir_name).join(&main);
    if let Err(e) = switch_link(&layout.config_link(), &target) {
        let _ = std::fs::remove_dir_all(&dir);
        return Outcome::Rejected(format!(
            "cannot point {} at {}: {e}",
            layout.config_link().display(),
            target.display()
        ));
    }
    remove_other_user_data(&layout.etc, &dir_name);
    if let Err(e) = remember(layout, text) {
        // The config is in place; only the "unchanged" shortcut is lost for the next boot.
        tracing::warn!("cannot record the applied user data: {e}");
    }
    Outcome::Applied {
        main: dir.join(main),
        kind: data.kind,
    }
}

fn already_applied(layout: &Layout, text: &str) -> Option<PathBuf> {
    let previous = std::fs::read(layout.applied_copy()).ok()?;
    if previous != text.as_bytes() {
        return None;
    }
    let main = std::fs::canonicalize(layout.config_link()).ok()?;
    main.starts_with(layout.etc.canonicalize().ok()?)
        .then_some(main)
        .filter(|m| {
            m.parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n.to_string_lossy().starts_with("user-data."))
        })
}

/// Writes the user data's files and checks them; returns the main config's file name.
fn write_and_check(dir: &Path, data: &UserData) -> Result<String, String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    make_dir(dir)?;
    let main = dir.join(data.main_file());
    write_file(&main, &data.config)?;
    for (name, content) in &data.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            make_dir(parent)?;
        }
        write_file(&path, content)?;
    }
    let compiled = compile::compile_file(&main, &Options::default()).map_err(|failed| {
        failed
            .diagnostic
            .one_line("appliance")
            .trim_start_matches("appliance: ")
            .to_string()
    })?;
    if data.ha.is_none() && data.admin.is_none() {
        return Ok(data.main_file().to_string());
    }

    // [ha] and [admin] complete the compiled model: write it as the appliance.toml to run.
    let mut model = compiled.model;
    if data.ha.is_some() && model.ha.is_some() {
        return Err(
            "the user data sets [ha] twice: inside [appliance] config and beside it".into(),
        );
    }
    if data.admin.is_some() && model.admin.is_some() {
        return Err(
            "the user data sets [admin] twice: inside [appliance] config and beside it".into(),
        );
    }
    model.ha = model.ha.or(data.ha.clone());
    model.admin = model.admin.or(data.admin.clone());
    if data.kind == InputKind::Toml {
        // The merged model replaces the user's appliance.toml under the same name.
        let _ = std::fs::rename(&main, dir.join("appliance.user.toml"));
    }
    let header = vec![
        format!(
            "compiled by appliance firstboot from {} in the user data, with its [ha]/[admin]",
            data.main_file()
        ),
        "The user data is the source: edit it (or the file beside this one) and re-run \
         `appliance firstboot`."
            .to_string(),
    ];
    let merged = dir.join("appliance.toml");
    write_file(&merged, &render_toml(&model, &compiled.sources, &header))?;
    compile::compile_file(&merged, &Options::default()).map_err(|failed| {
        format!(
            "the config merged with [ha]/[admin] is invalid: {}",
            failed.diagnostic.one_line("appliance")
        )
    })?;
    Ok("appliance.toml".to_string())
}

fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Certificates and keys may be among the files: only root and the service's group read them.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .and_then(|_| give_to_service_group(dir))
        .map_err(|e| format!("cannot set the owner of {}: {e}", dir.display()))
}

fn write_file(path: &Path, content: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(content.as_bytes())
        .and_then(|_| file.sync_all())
        .and_then(|_| give_to_service_group(path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The group `appliance.service` runs as, when the system has it (the image does; tests don't).
const SERVICE_GROUP: &str = "appliance";

fn give_to_service_group(path: &Path) -> std::io::Result<()> {
    let Some(gid) = group_id(SERVICE_GROUP) else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, None, Some(gid))
}

fn group_id(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|gid| gid.parse().ok()))
            .flatten()
    })
}

/// Atomically replaces `link` with a symlink to `target`.
fn switch_link(link: &Path, target: &Path) -> std::io::Result<()> {
    let fresh = link.with_file_name(".config.new");
    let _ = std::fs::remove_file(&fresh);
    symlink(target, &fresh)?;
    std::fs::rename(&fresh, link)
}

fn remove_other_user_data(etc: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(etc) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("user-data.") && name != keep {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn remember(layout: &Layout, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(&layout.state)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(layout.applied_copy())?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempLayout(Layout);

    impl TempLayout {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("appliance-firstboot-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let layout = Layout {
                etc: root.join("etc"),
                state: root.join("state"),
            };
            std::fs::create_dir_all(&layout.etc).unwrap();
            std::fs::write(layout.etc.join("default.toml"), PLACEHOLDER).unwrap();
            symlink("default.toml", layout.config_link()).unwrap();
            TempLayout(layout)
        }
        fn target(&self) -> PathBuf {
            std::fs::read_link(self.0.config_link()).unwrap()
        }
    }

    impl Drop for TempLayout {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.etc.parent().unwrap());
        }
    }

    const PLACEHOLDER: &str =
        "[[http.server]]\nlisten = [{ address = \"0.0.0.0:80\" }]\nreturn = { status = 503 }\n";

    const POOL: &str = r#"
[[http.upstream]]
name = "app"
[[http.upstream.server]]
address = "127.0.0.1:8081"

[[http.server]]
listen = [{ address = "0.0.0.0:8080" }]
[[http.server.location]]
path = "/"
proxy.pass = "http://app"
"#;

    fn wrapped(config: &str, rest: &str) -> String {
        format!("[appliance]\nconfig = '''{config}'''\n{rest}")
    }

    const HA: &str = "[ha]\nmode = \"local\"\npeer = \"192.0.2.12:5405\"\nvip = \"192.0.2.100\"\nvip_prefix = 24\ninterface = \"eth1\"\npriority = 150\n";

    #[test]
    fn a_config_is_written_checked_and_linked() {
        let t = TempLayout::new("toml");
        let text = wrapped(
            POOL,
            "files.\"tls/readme.txt\" = \"certificates go here\"\n",
        );
        let outcome = apply(&t.0, &text);
        let Outcome::Applied { main, kind } = &outcome else {
            panic!("expected Applied, got {outcome:?}");
        };
        assert_eq!(*kind, InputKind::Toml);
        assert!(main.ends_with("appliance.toml"));
        assert!(t.target().is_relative(), "{:?}", t.target());
        assert!(t.target().to_string_lossy().starts_with("user-data."));
        assert!(main.parent().unwrap().join("tls/readme.txt").is_file());
        let mode = std::fs::metadata(main).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let via_link = compile::compile_file(&t.0.config_link(), &Options::default()).unwrap();
        assert_eq!(
            via_link.kind,
            InputKind::Toml,
            "the link is read as what it points at"
        );
        assert_eq!(via_link.model.http.upstreams.len(), 1);
        // The same user data at the next boot changes nothing.
        assert!(matches!(apply(&t.0, &text), Outcome::Unchanged { .. }));
    }

    #[test]
    fn bad_user_data_keeps_the_current_config() {
        let t = TempLayout::new("bad");
        let broken = wrapped(
            "\n[[http.server]]\nlisten = [{ address = \"0.0.0.0:80\" }]\nbogus = 1\n",
            "",
        );
        match apply(&t.0, &broken) {
            Outcome::Rejected(why) => {
                assert!(why.contains("bogus"), "{why}");
                assert!(
                    why.contains("appliance.toml:3"),
                    "names file and line: {why}"
                );
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert_eq!(t.target(), Path::new("default.toml"));
        let leftovers: Vec<_> = std::fs::read_dir(&t.0.etc)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("user-data."))
            .collect();
        assert!(
            leftovers.is_empty(),
            "a rejected config leaves nothing behind"
        );
        assert!(matches!(apply(&t.0, ""), Outcome::Kept(_)));
        assert!(matches!(apply(&t.0, "#cloud-config\n"), Outcome::Kept(_)));
        assert!(matches!(
            apply(&t.0, "[appliance]\nconfgi = 1\n"),
            Outcome::Rejected(_)
        ));
        assert_eq!(t.target(), Path::new("default.toml"));
    }

    #[test]
    fn ha_and_admin_are_merged_into_the_config() {
        let t = TempLayout::new("ha");
        let text = wrapped(
            POOL,
            &format!("{HA}\n[admin]\nlisten = \"127.0.0.1:9901\"\n"),
        );
        let outcome = apply(&t.0, &text);
        assert!(
            matches!(
                outcome,
                Outcome::Applied {
                    kind: InputKind::Toml,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let dir = t.0.etc.join(t.target().parent().unwrap());
        assert!(
            dir.join("appliance.user.toml").is_file(),
            "the user's own file is kept beside"
        );
        let merged = compile::compile_file(&t.0.config_link(), &Options::default()).unwrap();
        let ha = merged.model.ha.expect("[ha] merged");
        assert_eq!(ha.priority, 150);
        assert_eq!(ha.interface.as_deref(), Some("eth1"));
        assert!(merged.model.admin.is_some());
        assert_eq!(merged.model.http.servers.len(), 1);
        // A new user data replaces the old directory.
        let old = t.target();
        assert!(matches!(
            apply(&t.0, &wrapped(POOL, "")),
            Outcome::Applied { .. }
        ));
        assert_ne!(t.target(), old);
        assert!(!t.0.etc.join(old.parent().unwrap()).exists());
    }

    #[test]
    fn ha_twice_is_rejected() {
        let t = TempLayout::new("twice");
        let inner = format!("\n{POOL}\n{HA}");
        match apply(&t.0, &wrapped(&inner, HA)) {
            Outcome::Rejected(why) => assert!(why.contains("[ha] twice"), "{why}"),
            other => panic!("expected Rejected, got {other:?}"),
        }
    }

    /// An nginx.conf whose include sits in [appliance.files] resolves relative to the applied
    /// directory through the `config` link.
    #[test]
    #[ignore = "needs the nginx front end (issue #2); run with --ignored once it is merged"]
    fn nginx_includes_resolve_through_the_link() {
        let t = TempLayout::new("nginx");
        let text = r#"
[appliance]
config = '''
events {}
http {
    upstream app { server 127.0.0.1:8081; }
    include conf.d/*.conf;
}
'''
files."conf.d/site.conf" = "server { listen 8080; location / { proxy_pass http://app; } }"
"#;
        let outcome = apply(&t.0, text);
        assert!(
            matches!(
                outcome,
                Outcome::Applied {
                    kind: InputKind::Nginx,
                    ..
                }
            ),
            "{outcome:?}"
        );
        let via_link = compile::compile_file(&t.0.config_link(), &Options::default()).unwrap();
        assert_eq!(
            via_link.model.http.servers.len(),
            1,
            "the include was followed"
        );
    }
}
