//! Named network namespaces as `ip netns` keeps them (`/run/netns/NAME`, a bind mount of a
//! namespace file), and running code inside one.
//!
//! A network namespace belongs to a *thread* on Linux; [`run_in`] therefore runs the closure on
//! a dedicated short-lived thread that `setns`es into the namespace, so the caller's thread never
//! changes netns. Everything that creates a socket or device inside the closure (netlink
//! requests, `/dev/net/tun`, `std::net` sockets, child processes) does so in that namespace.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::error::{Error, Result};

/// Where named namespaces live.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace. Dropping the handle does not delete it (as with `ip netns add`);
/// see [`NetnsHandle::delete_on_drop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsHandle {
    name: String,
    path: PathBuf,
}

impl NetnsHandle {
    /// A handle to an existing named namespace (not checked).
    pub fn existing(name: &str) -> Result<Self> {
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            path: path(name),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the namespace file (for `setns` or moving a link by fd).
    pub fn open(&self) -> Result<OwnedFd> {
        open_ns(&self.path)
    }

    /// Runs `f` inside this namespace (see [`run_in`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        run_in(&self.path, f)
    }

    /// A guard that deletes the namespace when dropped (tests, temporary namespaces).
    pub fn delete_on_drop(self) -> NetnsGuard {
        NetnsGuard(Some(self))
    }
}

/// Deletes its namespace when dropped, ignoring errors (it may already be gone).
#[derive(Debug)]
pub struct NetnsGuard(Option<NetnsHandle>);

impl NetnsGuard {
    pub fn handle(&self) -> &NetnsHandle {
        self.0
            .as_ref()
            .expect("guard holds its handle until dropped")
    }

    pub fn name(&self) -> &str {
        self.handle().name()
    }

    pub fn path(&self) -> &Path {
        self.handle().path()
    }

    /// Keeps the namespace: returns the handle without deleting.
    pub fn keep(mut self) -> NetnsHandle {
        self.0.take().expect("guard holds its handle until dropped")
    }
}

impl std::ops::Deref for NetnsGuard {
    type Target = NetnsHandle;
    fn deref(&self) -> &NetnsHandle {
        self.handle()
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = delete(&h.name);
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidNetnsName(name.to_string()));
    }
    Ok(())
}

/// `/run/netns/NAME`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// A name (`NAME` → `/run/netns/NAME`) or a path (anything with a `/`, e.g. `/proc/PID/ns/net`).
pub fn resolve(name_or_path: &Path) -> PathBuf {
    let s = name_or_path.as_os_str().as_encoded_bytes();
    if s.contains(&b'/') {
        name_or_path.to_path_buf()
    } else {
        Path::new(NETNS_RUN_DIR).join(name_or_path)
    }
}

fn open_ns(p: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|e| Error::netns(p, "open", e))
}

/// Makes `/run/netns` exist and be a shared mount point, as `ip netns add` does, so that the
/// namespace mounts propagate to mount namespaces created later (`ip netns exec`).
fn prepare_run_dir() -> Result<()> {
    // Two first-time callers racing would both bind-mount the directory onto itself.
    static PREPARING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = PREPARING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(|e| Error::netns(dir, "mkdir", e))?;
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    match rustix::mount::mount_change(dir, shared) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) => {
            // Not a mount point yet: bind it onto itself, then make it shared.
            rustix::mount::mount_bind_recursive(dir, dir)
                .map_err(|e| Error::netns(dir, "bind mount", e))?;
            rustix::mount::mount_change(dir, shared)
                .map_err(|e| Error::netns(dir, "make shared", e))
        }
        Err(e) => Err(Error::netns(dir, "make shared", e)),
    }
}

/// Creates the named network namespace `/run/netns/NAME` (like `ip netns add NAME`; fails if it
/// exists). The new namespace has only a `lo`, down.
pub fn create(name: &str) -> Result<NetnsHandle> {
    check_name(name)?;
    prepare_run_dir()?;
    let p = path(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o0)
        .open(&p)
        .map_err(|e| Error::netns(&p, "create mount point", e))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            // SAFETY: only CLONE_NEWNET is unshared: this thread gets a new network namespace;
            // its file descriptor table (the concern of `unshare_unsafe`) stays shared.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
                .map_err(|e| Error::netns(&p, "unshare(CLONE_NEWNET)", e))?;
            let me = format!(
                "/proc/self/task/{}/ns/net",
                rustix::thread::gettid().as_raw_nonzero()
            );
            rustix::mount::mount_bind(me.as_str(), &p)
                .map_err(|e| Error::netns(&p, "bind mount", e))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::netns(
                &p,
                "create",
                std::io::Error::other("namespace thread panicked"),
            ))
        })
    });
    match made {
        Ok(()) => Ok(NetnsHandle {
            name: name.to_string(),
            path: p,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&p);
            Err(e)
        }
    }
}

/// Deletes the named namespace (like `ip netns delete NAME`): unmounts and removes
/// `/run/netns/NAME`. The namespace itself ends when nothing else holds it (processes, open
/// fds); its virtual interfaces (veths, TAPs) are deleted with it.
pub fn delete(name: &str) -> Result<()> {
    check_name(name)?;
    let p = path(name);
    match rustix::mount::unmount(&p, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(rustix::io::Errno::NOENT) => {
            return Err(Error::netns(
                &p,
                "delete",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ))
        }
        Err(e) => return Err(Error::netns(&p, "unmount", e)),
    }
    std::fs::remove_file(&p).map_err(|e| Error::netns(&p, "remove", e))
}

/// Names in `/run/netns` (like `ip netns list`, unsorted).
pub fn list() -> Result<Vec<String>> {
    let dir = Path::new(NETNS_RUN_DIR);
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::netns(dir, "list", e)),
    };
    Ok(rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

/// Runs `f` on a dedicated thread inside the network namespace `name_or_path` (a name under
/// `/run/netns`, or a path such as `/proc/PID/ns/net`), and returns its result. A panic in `f`
/// is resumed in the caller.
pub fn run_in<T: Send>(name_or_path: &Path, f: impl FnOnce() -> T + Send) -> Result<T> {
    let p = resolve(name_or_path);
    let fd = open_ns(&p)?;
    std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<T> {
            rustix::thread::move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))
                .map_err(|e| Error::netns(&p, "setns", e))?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs `f` inside the network namespace open as `fd` (see [`run_in`]).
pub fn run_in_fd<T: Send>(
    fd: std::os::fd::BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        let h = s.spawn(|| -> Result<T> {
            rustix::thread::move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
                .map_err(|e| Error::netns("<fd>", "setns", e))?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(path("a"), PathBuf::from("/run/netns/a"));
        assert_eq!(resolve(Path::new("a")), PathBuf::from("/run/netns/a"));
        assert_eq!(
            resolve(Path::new("/proc/1/ns/net")),
            PathBuf::from("/proc/1/ns/net")
        );
        assert!(check_name("a/b").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("vn-io-1-x").is_ok());
    }
}
