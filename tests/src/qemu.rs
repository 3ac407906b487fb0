//! A real kernel with `sch_netem`, booted under `qemu-system-x86_64`, for
//! the netem latency backend (this machine's kernel lacks `sch_netem`).
//!
//! The kernel is Debian's (`linux-image-*-amd64`, a `.deb` that `.ci/run`
//! downloads with `apt-get download` into [`KERNEL_CACHE`]; never installed
//! on the host); the modules the test needs are taken from it. The
//! initramfs is built here from this host's binaries (the faultline
//! binaries, `bash`, `ip`, `tc`, coreutils, ...) and the shared libraries
//! `ldd` names, written as a `newc` cpio archive by [`Cpio`] (no `cpio`
//! command needed). The guest's `/init` is a bash script the test writes;
//! it prints its results on the serial console, which the test reads.
//!
//! qemu emulates the CPU (TCG): slower, but it works everywhere. KVM is
//! used only when `FAULTLINE_QEMU_KVM=1` and `/dev/kvm` opens (on this
//! machine `/dev/kvm` exists but a KVM guest hangs before the kernel prints
//! its first line, so it is not the default).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::Tool;

/// Where `.ci/run` puts the kernel package.
pub const KERNEL_CACHE: &str = "/var/cache/faultline/kernel";

/// What the qemu test needs on the host.
pub const QEMU_TOOLS: &[Tool] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("dpkg-deb", "dpkg"),
    ("ldd", "libc-bin"),
    ("strip", "binutils"),
];

/// The kernel package: `$FAULTLINE_KERNEL_DEB`, or the newest
/// `linux-image-*-amd64*.deb` in [`KERNEL_CACHE`].
pub fn kernel_deb() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FAULTLINE_KERNEL_DEB") {
        return Some(PathBuf::from(p));
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir(KERNEL_CACHE)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("linux-image-") && n.ends_with(".deb")
        })
        .collect();
    debs.sort();
    debs.pop()
}

/// An unpacked kernel package.
pub struct Kernel {
    _dir: tempfile::TempDir,
    pub vmlinuz: PathBuf,
    pub release: String,
    modules: PathBuf,
}

impl Kernel {
    pub fn unpack(deb: &Path) -> anyhow::Result<Kernel> {
        let dir = tempfile::tempdir()?;
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(dir.path())
            .status()
            .map_err(|e| anyhow::anyhow!("dpkg-deb: {e}"))?;
        if !st.success() {
            return Err(anyhow::anyhow!("dpkg-deb -x {} failed", deb.display()));
        }
        let boot = dir.path().join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .map_err(|e| anyhow::anyhow!("{}: {e}", boot.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
            })
            .ok_or_else(|| anyhow::anyhow!("no vmlinuz in {}", deb.display()))?;
        let release = vmlinuz
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        let modules = dir.path().join("lib/modules").join(&release).join("kernel");
        Ok(Kernel {
            _dir: dir,
            vmlinuz,
            release,
            modules,
        })
    }

    /// A module's file, by its path under `kernel/` (e.g.
    /// `net/sched/sch_netem.ko`), compressed or not.
    pub fn module(&self, rel: &str) -> anyhow::Result<PathBuf> {
        for ext in ["", ".xz", ".zst"] {
            let p = self.modules.join(format!("{rel}{ext}"));
            if p.exists() {
                return Ok(p);
            }
        }
        Err(anyhow::anyhow!(
            "module {rel} not in the kernel package ({})",
            self.release
        ))
    }
}

/// A `newc` cpio archive (the initramfs format), written in memory.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn header(&mut self, name: &str, mode: u32, size: usize) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            size as u32,
            0,
            0,
            0,
            0,
            (name.len() + 1) as u32,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory and its parents (once each).
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if self.dirs.insert(so_far.clone()) {
                let name = so_far.clone();
                self.header(&name, 0o040755, 0);
            }
        }
    }

    /// A file with `data` and permission bits `perm`.
    pub fn file(&mut self, path: &str, data: &[u8], perm: u32) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.header(path, 0o100000 | perm, data.len());
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.header(path, 0o120777, target.len());
        self.out.extend_from_slice(target.as_bytes());
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0);
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

/// The shared libraries (and the loader) `ldd` names for `bin`.
pub fn shared_libs(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| anyhow::anyhow!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for l in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match l.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Finds a command on `PATH`.
pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var("PATH").unwrap_or_default())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Builds an initramfs: `bins` (host paths, put in `/bin` under their file
/// name or under the given name) with their libraries at the same paths as
/// on the host, `files` (guest path, contents), `modules` into
/// `/lib/modules/`, and `init` as `/init`.
pub fn initramfs(
    bins: &[(PathBuf, Option<&str>)],
    files: &[(&str, String)],
    modules: &[PathBuf],
    init: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "run", "etc", "lib/modules", "var"] {
        c.dir(d);
    }
    let mut libs: BTreeSet<PathBuf> = BTreeSet::new();
    let scratch = tempfile::tempdir()?;
    for (bin, name) in bins {
        // Debug builds carry hundreds of MB of debug info the guest does
        // not need in RAM: strip a copy when `strip` is there.
        let stripped = scratch.path().join(bin.file_name().unwrap_or_default());
        let data = match Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(bin)
            .status()
        {
            Ok(s) if s.success() => std::fs::read(&stripped),
            _ => std::fs::read(bin),
        }
        .map_err(|e| anyhow::anyhow!("{}: {e}", bin.display()))?;
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| bin.file_name().unwrap_or_default().to_string_lossy().into_owned());
        c.file(&format!("bin/{name}"), &data, 0o755);
        libs.extend(shared_libs(bin)?);
    }
    for lib in &libs {
        // Libraries at the path the loader looks for them, resolved to
        // their file's contents (no symlink chains to follow).
        let data = std::fs::read(lib).map_err(|e| anyhow::anyhow!("{}: {e}", lib.display()))?;
        c.file(&lib.display().to_string(), &data, 0o755);
    }
    // The loader also looks in /lib64 and /lib on merged-/usr systems.
    for (link, target) in [("lib64", "usr/lib64"), ("sbin", "bin"), ("usr/bin", "../bin")] {
        if !c.dirs.contains(link) {
            c.symlink(link, target);
        }
    }
    for m in modules {
        let data = std::fs::read(m).map_err(|e| anyhow::anyhow!("{}: {e}", m.display()))?;
        let name = m.file_name().unwrap_or_default().to_string_lossy().into_owned();
        c.file(&format!("lib/modules/{name}"), &data, 0o644);
    }
    for (path, text) in files {
        c.file(path, text.as_bytes(), 0o644);
    }
    c.file("init", init.as_bytes(), 0o755);
    Ok(c.finish())
}

/// Whether to use KVM: asked for with `FAULTLINE_QEMU_KVM=1`, and
/// `/dev/kvm` opens.
pub fn kvm_usable() -> bool {
    std::env::var("FAULTLINE_QEMU_KVM").as_deref() == Ok("1")
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// What a guest printed on its serial console, and how long it ran.
pub struct Boot {
    pub console: String,
    pub wall: Duration,
    pub kvm: bool,
}

/// Boots `kernel` with `initrd` and returns its console output once the
/// guest powers off, or an error after `limit` (the qemu process is killed).
pub fn boot(kernel: &Path, initrd: &[u8], memory_mib: u32, limit: Duration) -> anyhow::Result<Boot> {
    let dir = tempfile::tempdir()?;
    let initrd_path = dir.path().join("initrd.cpio");
    std::fs::write(&initrd_path, initrd)?;
    let console = dir.path().join("console.log");
    let kvm = kvm_usable();
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-m",
        &memory_mib.to_string(),
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
    ])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(&initrd_path)
    .args([
        "-append",
        "console=ttyS0 panic=-1 quiet loglevel=1 rdinit=/init",
        "-serial",
    ])
    .arg(format!("file:{}", console.display()))
    .args(["-monitor", "none", "-net", "none"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if kvm {
        cmd.args(["-enable-kvm", "-cpu", "host"]);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("qemu-system-x86_64: {e}"))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    match status {
        Some(_) => Ok(Boot {
            console: text,
            wall: started.elapsed(),
            kvm,
        }),
        None => Err(anyhow::anyhow!(
            "the guest did not power off within {limit:?}; qemu stderr: {err}\nconsole:\n{text}"
        )),
    }
}

/// The value of the first `@@ KEY ...` line a guest's `/init` printed on
/// the serial console (the tests' convention for reading results).
pub fn console_field<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    let tag = format!("@@ {key}");
    // A line may start with the firmware's terminal escapes: find the tag.
    console
        .lines()
        .find_map(|l| l.find(&tag).map(|i| &l[i + tag.len()..]))
        .map(str::trim)
}

/// The kernel package, or `None` after printing why the test skips (and
/// panicking under `CI=true`, which forbids skipping).
pub fn kernel_deb_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(deb) = kernel_deb() {
        return Some(deb);
    }
    let msg = format!(
        "{test} needs Debian's kernel package: mkdir -p {dir} && cd {dir} && apt-get download linux-image-amd64 $(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image/{{print $2}}') (or set FAULTLINE_KERNEL_DEB)",
        dir = KERNEL_CACHE
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{msg} (CI=true forbids skipping)"
    );
    eprintln!("skipping {msg}");
    None
}
