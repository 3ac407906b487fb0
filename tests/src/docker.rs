//! Containers on the machine's real Docker Engine for the container tests:
//! an image built from this host's own files (`docker import` of a root
//! filesystem holding `sh`, `sleep` and the libraries `ldd` names; nothing
//! is pulled), a network and containers, all named with one unique prefix
//! and removed by [`DockerLab`]'s `Drop`.

use std::path::Path;
use std::process::Command;

/// Runs `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// True when the Docker Engine answers. Otherwise prints why and returns
/// false, unless `CI=true`, where it panics: CI has an engine.
pub fn docker_or_skip(test: &str) -> bool {
    if !crate::lab::root_or_skip(test) {
        return false;
    }
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let msg = format!("{test} needs a running Docker Engine (`docker version` failed)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

/// One test's image, network and containers.
pub struct DockerLab {
    /// `fltest-<pid>-<n>`: every object's name starts with it.
    pub prefix: String,
    pub image: String,
    pub network: String,
    containers: Vec<String>,
}

/// Copies `bin` and the libraries it links into `root`.
fn copy_with_libs(bin: &Path, root: &Path) {
    let mut files = vec![bin.to_path_buf()];
    let ldd = Command::new("ldd").arg(bin).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(p.into());
        }
    }
    for f in files {
        let real = std::fs::canonicalize(&f).expect("canonical path");
        let dest = root.join(f.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&real, &dest).expect("copy into rootfs");
    }
}

impl DockerLab {
    /// Builds the image and creates the network.
    pub fn new(name: &str) -> DockerLab {
        Self::with_bins(name, &[])
    }

    /// Like [`DockerLab::new`], with more host binaries in the image's
    /// `/bin` (with their libraries).
    pub fn with_bins(name: &str, bins: &[&Path]) -> DockerLab {
        let prefix = format!("fltest-{name}-{}", std::process::id());
        let image = format!("{prefix}-img:1");
        let network = format!("{prefix}-net");
        let lab = DockerLab {
            prefix,
            image,
            network,
            containers: Vec::new(),
        };
        let root = tempfile::tempdir().expect("rootfs dir");
        for bin in ["/bin/sh", "/bin/sleep"] {
            copy_with_libs(Path::new(bin), root.path());
        }
        for bin in bins {
            copy_with_libs(bin, root.path());
            let name = bin.file_name().expect("binary name");
            let dest = root.path().join("bin").join(name);
            if !dest.exists() {
                std::fs::copy(bin, dest).expect("copy binary");
            }
        }
        for d in ["tmp", "proc", "sys", "dev", "etc"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        // An absolute symlink a hostile image could plant: a fill of
        // /tmp/escape must still land inside the container.
        std::os::unix::fs::symlink("/", root.path().join("tmp/escape")).expect("symlink");
        let tar = root.path().with_extension("tar");
        let st = Command::new("tar")
            .args([
                "-C",
                &root.path().display().to_string(),
                "-cf",
                &tar.display().to_string(),
                ".",
            ])
            .status()
            .expect("tar");
        assert!(st.success());
        docker(&["import", &tar.display().to_string(), &lab.image]);
        let _ = std::fs::remove_file(&tar);
        docker(&[
            "network",
            "create",
            "--label",
            &format!("{}=1", lab.prefix),
            &lab.network,
        ]);
        lab
    }

    /// Starts a container `<prefix>-<name>` running `cmd` with `args`
    /// (e.g. `--restart always`, `--label k=v`) on the lab network; returns
    /// its id.
    pub fn run(&mut self, name: &str, args: &[&str], cmd: &[&str]) -> String {
        let full = format!("{}-{name}", self.prefix);
        let mut a = vec!["run", "-d", "--name", &full];
        // On the lab network unless `args` choose another (--network=host).
        if !args.iter().any(|a| a.starts_with("--network")) {
            a.extend(["--network", self.network.as_str()]);
        }
        a.extend_from_slice(args);
        a.push(&self.image);
        a.extend_from_slice(cmd);
        let id = docker(&a);
        self.containers.push(full);
        id
    }

    /// A container's host PID of its init process (0 when not running).
    pub fn pid(&self, name: &str) -> u32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", &format!("{}-{name}", self.prefix)])
            .parse()
            .unwrap_or(0)
    }

    /// The container's address on the lab network, and the network's gateway
    /// (the host's end of the bridge).
    pub fn addr(&self, name: &str) -> (String, String) {
        let c = format!("{}-{name}", self.prefix);
        let ip = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &c,
        ]);
        let gw = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
            &c,
        ]);
        (ip, gw)
    }

    /// Names of the files in `dir` inside the running container `name`.
    pub fn files_in(&self, name: &str, dir: &str) -> Vec<String> {
        let pid = self.pid(name);
        let path = format!("/proc/{pid}/root{dir}");
        std::fs::read_dir(path)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).output();
    }
}
