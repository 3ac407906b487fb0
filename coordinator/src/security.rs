//! Who may talk to the coordinator.
//!
//! - **mTLS** (`faultline serve --tls-dir DIR`, made by `faultline certs
//!   init`): the coordinator presents its certificate; agents must present
//!   one signed by the same CA, and the agent id in Hello must equal the
//!   certificate's common name, so one node cannot pose as another.
//! - **Bearer tokens** (`--tokens FILE`, lines `NAME TOKEN`): Control calls
//!   must carry `authorization: Bearer TOKEN`; the audit log records NAME.
//!   With TLS on, a client certificate from the CA is accepted instead.
//! - Neither: the coordinator only listens on loopback (see `serve`).
//!
//! `faultline certs init` makes a CA and the certificates with rcgen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

/// Errors setting security up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Tokens {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot make certificates: {0}")]
    Cert(#[from] rcgen::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Bearer tokens and the names they stand for.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_token: HashMap<String, String>,
}

impl Tokens {
    /// Parses `NAME TOKEN` lines (`#` starts a comment).
    pub fn parse(path: &Path, text: &str) -> Result<Tokens, Error> {
        let mut by_token = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: &str| Error::Tokens {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.to_string(),
            };
            let mut w = line.split_whitespace();
            let (Some(name), Some(token), None) = (w.next(), w.next(), w.next()) else {
                return Err(err("expected NAME TOKEN"));
            };
            if token.len() < 16 {
                return Err(err("token is shorter than 16 characters; use a long random one"));
            }
            if by_token.insert(token.to_string(), name.to_string()).is_some() {
                return Err(err("token used twice"));
            }
        }
        if by_token.is_empty() {
            return Err(Error::Tokens {
                path: path.to_path_buf(),
                line: 0,
                message: "no tokens".into(),
            });
        }
        Ok(Tokens { by_token })
    }

    pub fn load(path: &Path) -> Result<Tokens, Error> {
        let text = String::from_utf8_lossy(&read(path)?).into_owned();
        Tokens::parse(path, &text)
    }

    /// The name of a token, compared in constant time per entry.
    pub fn name_of(&self, token: &str) -> Option<&str> {
        self.by_token
            .iter()
            .find(|(t, _)| {
                t.len() == token.len() && t.bytes().zip(token.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
            })
            .map(|(_, n)| n.as_str())
    }
}

/// The coordinator's security settings. The default is none (loopback only).
#[derive(Clone, Default)]
pub struct Security {
    /// PEM of the coordinator's certificate and key, and of the CA agents'
    /// certificates must chain to.
    pub tls: Option<(Identity, Certificate)>,
    pub tokens: Option<Tokens>,
}

impl Security {
    /// Loads `DIR/ca.pem`, `DIR/coordinator.pem`, `DIR/coordinator.key`.
    pub fn tls_from_dir(dir: &Path) -> Result<(Identity, Certificate), Error> {
        let cert = read(&dir.join("coordinator.pem"))?;
        let key = read(&dir.join("coordinator.key"))?;
        let ca = read(&dir.join("ca.pem"))?;
        Ok((Identity::from_pem(cert, key), Certificate::from_pem(ca)))
    }

    pub fn is_on(&self) -> bool {
        self.tls.is_some() || self.tokens.is_some()
    }

    /// The TLS server config: client certificates are verified against the
    /// CA when presented; AgentLink then insists on one, Control accepts a
    /// token instead.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.tls.as_ref().map(|(id, ca)| {
            ServerTlsConfig::new()
                .identity(id.clone())
                .client_ca_root(ca.clone())
                .client_auth_optional(true)
        })
    }

    /// Who is calling Control: the token's name, or the client
    /// certificate's common name. Without any security configured, the
    /// peer address (the coordinator is loopback-only then).
    pub fn control_caller<T>(&self, req: &Request<T>) -> Result<String, Status> {
        if let Some(tokens) = &self.tokens {
            if let Some(h) = req.metadata().get("authorization") {
                let h = h.to_str().unwrap_or("");
                let token = h.strip_prefix("Bearer ").unwrap_or("");
                return match tokens.name_of(token) {
                    Some(name) => Ok(format!("token:{name}")),
                    None => Err(Status::unauthenticated("wrong bearer token")),
                };
            }
        }
        if self.tls.is_some() {
            if let Some(cn) = peer_common_name(req) {
                return Ok(format!("cert:{cn}"));
            }
        }
        if self.is_on() {
            return Err(Status::unauthenticated(
                "this coordinator needs a bearer token or a client certificate signed by its CA",
            ));
        }
        Ok(match req.remote_addr() {
            Some(a) => format!("anonymous@{a}"),
            None => "anonymous".into(),
        })
    }

    /// Checks an agent's identity: with TLS on, it must present a
    /// certificate whose common name is the agent id it claims.
    /// `cn` is the common name of the client certificate, read from the
    /// request before its stream is consumed.
    pub fn check_agent(&self, cn: Option<String>, agent_id: &str) -> Result<(), Status> {
        if self.tls.is_none() {
            return Ok(());
        }
        match cn {
            None => Err(Status::unauthenticated(
                "agents must present a client certificate signed by this coordinator's CA",
            )),
            Some(cn) if cn == agent_id => Ok(()),
            Some(cn) => Err(Status::permission_denied(format!(
                "agent id {agent_id:?} does not match its certificate (common name {cn:?})"
            ))),
        }
    }
}

/// The common name of the client certificate (TLS already verified it).
pub fn peer_common_name<T>(req: &Request<T>) -> Option<String> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// What `faultline certs init` writes.
pub struct Made {
    pub files: Vec<PathBuf>,
}

fn write(path: &Path, data: &str, secret: bool) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    if secret {
        o.mode(0o600);
    }
    use std::io::Write;
    o.open(path)
        .and_then(|mut f| f.write_all(data.as_bytes()))
        .map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Makes a CA, a coordinator certificate valid for `hosts` (DNS names or
/// IPs), one client certificate per agent id (common name = the id), and
/// one for the CLI (`cli`), all in `dir`.
pub fn certs_init(dir: &Path, hosts: &[String], agents: &[String]) -> Result<Made, Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "faultline CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key)?;
    let ca_issuer = rcgen::Issuer::new(ca_params, ca_key);
    write(&dir.join("ca.pem"), &ca.pem(), false)?;
    files.push(dir.join("ca.pem"));
    let mut leaf = |file: &str, cn: &str, sans: Vec<String>, server: bool| -> Result<(), Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &ca_issuer)?;
        write(&dir.join(format!("{file}.pem")), &cert.pem(), false)?;
        write(&dir.join(format!("{file}.key")), &key.serialize_pem(), true)?;
        files.push(dir.join(format!("{file}.pem")));
        files.push(dir.join(format!("{file}.key")));
        Ok(())
    };
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    sans.extend(hosts.iter().cloned());
    sans.dedup();
    leaf("coordinator", "faultline coordinator", sans, true)?;
    for a in agents {
        leaf(&format!("agent-{a}"), a, vec![a.clone()], false)?;
    }
    leaf("cli", "cli", vec!["cli".into()], false)?;
    Ok(Made { files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_checked() {
        let p = Path::new("tokens");
        let t = Tokens::parse(p, "# ci\nci 0123456789abcdef0123\nops fedcba9876543210fedc # pager\n").unwrap();
        assert_eq!(t.name_of("0123456789abcdef0123"), Some("ci"));
        assert_eq!(t.name_of("0123456789abcdef0124"), None);
        assert_eq!(t.name_of(""), None);
        for (text, want) in [
            ("ci short\n", "tokens:1: token is shorter"),
            ("ci\n", "tokens:1: expected NAME TOKEN"),
            (
                "a 0123456789abcdef0123\nb 0123456789abcdef0123\n",
                "tokens:2: token used twice",
            ),
            ("# nothing\n", "no tokens"),
        ] {
            let e = Tokens::parse(p, text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn certs_init_writes_a_ca_and_leaf_certificates_with_the_agent_ids() {
        let dir = tempfile::tempdir().unwrap();
        let made = certs_init(dir.path(), &["10.0.0.5".into()], &["node-a".into()]).unwrap();
        assert_eq!(made.files.len(), 7);
        let pem = std::fs::read(dir.path().join("agent-node-a.pem")).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = p.parse_x509().unwrap();
        assert_eq!(
            cert.subject().iter_common_name().next().unwrap().as_str().unwrap(),
            "node-a"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent-node-a.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "keys are private");
    }
}
