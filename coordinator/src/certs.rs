//! What `faultline certs` writes: a CA, the coordinator's certificate, one
//! client certificate per agent and one for the CLI.
//!
//! Every leaf certificate carries its **role** in the subject's
//! organizational unit (`OU=faultline-agent`, `OU=faultline-cli`,
//! `OU=faultline-coordinator`). The CA signs the subject, so a role cannot be
//! changed without the CA's key; the coordinator reads it back with
//! [`Role::of_der`] and admits agent certificates on `AgentLink` only and the
//! CLI certificate on `Control` only (see [`crate::security`]).
//!
//! Nothing is written until every id and host name has been checked and every
//! certificate has been made, so a bad argument never leaves a half-written
//! directory; an existing CA is never replaced unless the caller forces it
//! (replacing it invalidates every certificate already deployed).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use faultline_proto::ids::{validate_agent_id, IdError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// Errors making certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Id(#[from] IdError),
    #[error("agent id {0:?} is given twice")]
    DuplicateAgent(String),
    #[error("host {shown}: expected a DNS name (letters, digits, '-', '.') or an IP address")]
    Host { shown: String },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("{} is missing: this directory has no CA key to sign with", path.display())]
    NoCaKey { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a usable CA: {source}")]
    BadCa { path: PathBuf, source: rcgen::Error },
    #[error("cannot make certificates: {0}")]
    Cert(#[from] rcgen::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a leaf certificate may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves AgentLink and Control.
    Coordinator,
    /// Calls AgentLink only; its common name is the agent id.
    Agent,
    /// Calls Control only.
    Cli,
}

impl Role {
    /// The organizational unit that marks the role.
    pub fn unit(self) -> &'static str {
        match self {
            Role::Coordinator => "faultline-coordinator",
            Role::Agent => "faultline-agent",
            Role::Cli => "faultline-cli",
        }
    }

    fn from_unit(ou: &str) -> Option<Role> {
        [Role::Coordinator, Role::Agent, Role::Cli]
            .into_iter()
            .find(|r| r.unit() == ou)
    }

    /// The common name and role of a DER certificate. The role is `None`
    /// when the certificate has no (or more than one) faultline unit, e.g.
    /// one made before roles existed.
    pub fn of_der(der: &[u8]) -> Option<(String, Option<Role>)> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
        let roles: Vec<Role> = cert
            .subject()
            .iter_organizational_unit()
            .filter_map(|ou| ou.as_str().ok().and_then(Role::from_unit))
            .collect();
        let role = match roles.as_slice() {
            [r] => Some(*r),
            _ => None,
        };
        Some((cn, role))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Coordinator => "coordinator",
            Role::Agent => "agent",
            Role::Cli => "CLI",
        })
    }
}

/// A file to write: path, contents, and whether it is a private key (mode 0600).
struct Out {
    path: PathBuf,
    data: String,
    secret: bool,
}

/// What `faultline certs` wrote, in order.
#[derive(Debug)]
pub struct Made {
    pub files: Vec<PathBuf>,
}

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

/// The file stem of an agent's certificate and key (`agent-<id>.pem/.key`).
pub fn agent_stem(agent_id: &str) -> String {
    format!("agent-{agent_id}")
}

fn check_agents(agents: &[String]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for a in agents {
        validate_agent_id(a)?;
        if !seen.insert(a.as_str()) {
            return Err(Error::DuplicateAgent(a.clone()));
        }
    }
    Ok(())
}

fn check_host(h: &str) -> Result<()> {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let dns_ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        });
    if dns_ok {
        Ok(())
    } else {
        Err(Error::Host {
            shown: format!(
                "\"{}\"",
                h.chars().take(60).flat_map(char::escape_default).collect::<String>()
            ),
        })
    }
}

/// Refuses to replace any of `outs` unless `force`.
fn check_free(outs: &[Out], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    match outs.iter().find(|o| o.path.symlink_metadata().is_ok()) {
        Some(o) => Err(Error::Exists { path: o.path.clone() }),
        None => Ok(()),
    }
}

fn write_all(dir: &Path, outs: Vec<Out>) -> Result<Made> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for o in outs {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        if o.secret {
            opts.mode(0o600);
        }
        opts.open(&o.path)
            .and_then(|mut f| f.write_all(o.data.as_bytes()))
            .map_err(|source| Error::Write {
                path: o.path.clone(),
                source,
            })?;
        files.push(o.path);
    }
    Ok(Made { files })
}

/// Makes one leaf certificate signed by `ca`.
fn leaf(dir: &Path, ca: &Issuer<'_, KeyPair>, stem: &str, cn: &str, role: Role, sans: Vec<String>) -> Result<[Out; 2]> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(sans)?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationalUnitName, role.unit());
    p.extended_key_usages = vec![if role == Role::Coordinator {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = p.signed_by(&key, ca)?;
    Ok([
        Out {
            path: dir.join(format!("{stem}.pem")),
            data: cert.pem(),
            secret: false,
        },
        Out {
            path: dir.join(format!("{stem}.key")),
            data: key.serialize_pem(),
            secret: true,
        },
    ])
}

/// Makes a CA (`ca.pem`, `ca.key`), a coordinator certificate valid for
/// `hosts` (DNS names or IPs, plus localhost and 127.0.0.1), one agent
/// certificate per id (common name = the id) and one CLI certificate, all in
/// `dir`. Refuses to replace existing files unless `force`.
pub fn init(dir: &Path, hosts: &[String], agents: &[String], force: bool) -> Result<Made> {
    check_agents(agents)?;
    for h in hosts {
        check_host(h)?;
    }
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "faultline CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let mut outs = vec![
        Out {
            path: dir.join(CA_CERT),
            data: ca_cert.pem(),
            secret: false,
        },
        Out {
            path: dir.join(CA_KEY),
            data: ca_key.serialize_pem(),
            secret: true,
        },
    ];
    let ca = Issuer::new(ca_params, ca_key);
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    for h in hosts {
        if !sans.contains(h) {
            sans.push(h.clone());
        }
    }
    outs.extend(leaf(
        dir,
        &ca,
        "coordinator",
        "faultline coordinator",
        Role::Coordinator,
        sans,
    )?);
    for a in agents {
        outs.extend(leaf(dir, &ca, &agent_stem(a), a, Role::Agent, vec![a.clone()])?);
    }
    outs.extend(leaf(dir, &ca, "cli", "cli", Role::Cli, vec!["cli".into()])?);
    check_free(&outs, force)?;
    write_all(dir, outs)
}

/// Signs one agent certificate per id with the CA in `dir` (made by
/// [`init`]). Refuses to replace an agent's existing files unless `force`.
pub fn add_agents(dir: &Path, agents: &[String], force: bool) -> Result<Made> {
    check_agents(agents)?;
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound if name == CA_KEY => Error::NoCaKey { path: path.clone() },
            _ => Error::Read {
                path: path.clone(),
                source,
            },
        })
    };
    let ca_pem = read(CA_CERT)?;
    let key_pem = read(CA_KEY)?;
    let bad = |path: &str| {
        let path = dir.join(path);
        move |source| Error::BadCa { path, source }
    };
    let key = KeyPair::from_pem(&key_pem).map_err(bad(CA_KEY))?;
    let ca = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(bad(CA_CERT))?;
    let mut outs = Vec::new();
    for a in agents {
        outs.extend(leaf(dir, &ca, &agent_stem(a), a, Role::Agent, vec![a.clone()])?);
    }
    check_free(&outs, force)?;
    write_all(dir, outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_of(path: &Path) -> (String, Option<Role>) {
        let pem = std::fs::read(path).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        Role::of_der(&p.contents).unwrap()
    }

    #[test]
    fn init_writes_a_ca_and_leaf_certificates_with_ids_and_roles() {
        let dir = tempfile::tempdir().unwrap();
        let made = init(dir.path(), &["10.0.0.5".into()], &["node-a".into()], false).unwrap();
        assert_eq!(made.files.len(), 8);
        assert_eq!(
            role_of(&dir.path().join("agent-node-a.pem")),
            ("node-a".into(), Some(Role::Agent))
        );
        assert_eq!(role_of(&dir.path().join("cli.pem")), ("cli".into(), Some(Role::Cli)));
        assert_eq!(role_of(&dir.path().join("coordinator.pem")).1, Some(Role::Coordinator));
        use std::os::unix::fs::PermissionsExt;
        for key in ["agent-node-a.key", "ca.key", "cli.key", "coordinator.key"] {
            let mode = std::fs::metadata(dir.path().join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key} is private");
        }
    }

    #[test]
    fn init_refuses_to_replace_an_existing_ca_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[], &["node-a".into()], false).unwrap();
        let ca_before = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let e = init(dir.path(), &[], &["node-a".into()], false).unwrap_err();
        assert!(matches!(&e, Error::Exists { path } if path.ends_with(CA_CERT)), "{e}");
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca_before);
        init(dir.path(), &[], &["node-a".into()], true).unwrap();
        assert_ne!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca_before);
    }

    #[test]
    fn bad_ids_and_hosts_are_refused_before_anything_is_written() {
        let root = tempfile::tempdir().unwrap();
        for (hosts, agents, want) in [
            (
                vec![],
                vec!["node-a".to_string(), "bad id/../x".to_string()],
                "contains ' '",
            ),
            (vec![], vec!["a".to_string(), "a".to_string()], "given twice"),
            (vec!["bad host".to_string()], vec![], "host \"bad host\""),
        ] {
            let dir = root.path().join("tls");
            let e = init(&dir, &hosts, &agents, false).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
            assert!(!dir.exists(), "nothing written for {agents:?} {hosts:?}");
        }
    }

    #[test]
    fn add_agents_signs_with_the_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &[], &[], false).unwrap();
        let ca_before = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        add_agents(dir.path(), &["node-c".into()], false).unwrap();
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca_before);
        assert_eq!(
            role_of(&dir.path().join("agent-node-c.pem")),
            ("node-c".into(), Some(Role::Agent))
        );
        // The new certificate chains to the CA.
        let ca_pem = x509_parser::pem::parse_x509_pem(&ca_before).unwrap().1;
        let ca = ca_pem.parse_x509().unwrap();
        let leaf_pem = std::fs::read(dir.path().join("agent-node-c.pem")).unwrap();
        let leaf_pem = x509_parser::pem::parse_x509_pem(&leaf_pem).unwrap().1;
        let leaf = leaf_pem.parse_x509().unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        // Again: refused without force; a bad id writes nothing.
        let e = add_agents(dir.path(), &["node-c".into()], false).unwrap_err();
        assert!(matches!(e, Error::Exists { .. }), "{e}");
        assert!(add_agents(dir.path(), &["ok".into(), "../x".into()], false).is_err());
        assert!(!dir.path().join("agent-ok.pem").exists());
        // A directory without a CA key says so.
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join(CA_CERT), &ca_before).unwrap();
        let e = add_agents(empty.path(), &["n".into()], false).unwrap_err();
        assert!(matches!(e, Error::NoCaKey { .. }), "{e}");
    }
}
