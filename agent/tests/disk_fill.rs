//! disk_fill on a real filesystem: a tmpfs this test mounts (never the root
//! filesystem). Needs root for the mount: without it the test prints why and
//! returns, except under CI=true, where it fails.

use std::path::{Path, PathBuf};

use faultline_agent::faults::disk_fill::{self, Amount, DiskFillSpec, FillPolicy, Space};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A 64 MiB tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "disk_fill tests need root to mount a tmpfs, and CI=true forbids skipping"
            );
            eprintln!("skipping: disk_fill tests need root to mount a tmpfs");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=64m"),
        )
        .expect("mount tmpfs");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

fn policy(allowed: &Path, max: f64) -> FillPolicy {
    FillPolicy {
        allowed: vec![allowed.to_path_buf()],
        max_used_percent: max,
    }
}

#[test]
fn fill_to_a_target_percentage_then_restore_leaves_nothing() {
    let Some(fs) = Tmpfs::mount() else { return };
    let spec = DiskFillSpec {
        path: fs.path(),
        amount: Amount::UsedPercent(50.0),
    };
    let applied = disk_fill::apply("r1-1", &spec, &policy(&fs.path(), 95.0)).expect("fill");
    let file = fs.path().join(".faultline-fill-r1-1");
    assert!(file.exists());
    let used = Space::of(&fs.path()).unwrap().used_percent(0);
    assert!((49.0..=52.0).contains(&used), "used {used}%");
    assert_eq!(applied.observation.method, "fallocate");
    applied.restore().expect("restore");
    assert!(!file.exists());
    assert!(Space::of(&fs.path()).unwrap().used_percent(0) < 1.0);
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0, "nothing left behind");
}

#[test]
fn fill_beyond_the_agents_maximum_is_refused_and_writes_nothing() {
    let Some(fs) = Tmpfs::mount() else { return };
    let spec = DiskFillSpec {
        path: fs.path(),
        amount: Amount::LeaveFree(1 << 20),
    };
    let err = disk_fill::apply("r1-2", &spec, &policy(&fs.path(), 90.0)).unwrap_err();
    assert!(err.is_refusal() && err.to_string().contains("maximum of 90%"), "{err}");
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}

#[test]
fn fill_outside_the_allowed_paths_is_refused() {
    let Some(fs) = Tmpfs::mount() else { return };
    let other = tempfile::tempdir().unwrap();
    let spec = DiskFillSpec {
        path: fs.path(),
        amount: Amount::Bytes(1 << 20),
    };
    let err = disk_fill::apply("r1-3", &spec, &policy(other.path(), 95.0)).unwrap_err();
    assert!(
        err.is_refusal() && err.to_string().contains("outside the agent's allowed fill paths"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(fs.path()).unwrap().count(), 0);
}
