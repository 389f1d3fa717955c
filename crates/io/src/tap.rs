//! TAP devices: `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` (SYSTEM.md 11.4).
//!
//! A [`Tap`] is one open queue of a TAP device: a non-blocking file descriptor from which every
//! `read` returns exactly one Ethernet frame (preceded by the 12-byte `virtio_net_hdr_v1` when
//! the virtio-net header is on) and to which every `write` hands one frame to the kernel.
//!
//! `TUNSETIFF` looks the name up in the network namespace of the thread that calls it, so a
//! TAP is created (or attached to) in the caller's current netns; [`Tap::open_in`] does it inside
//! another one. The fd stays valid when the device is later moved to another netns (SYSTEM.md
//! gotcha 19), which is how pod TAPs are made: created in the node's netns, moved into the pod's.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
use crate::sys;

/// Which offloads the kernel may hand to (and accept from) the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Offload {
    /// No offload: the kernel checksums and segments everything before the TAP.
    None,
    /// `TUN_F_CSUM`: frames may carry a partial L4 checksum (`NEEDS_CSUM`), at most MTU-sized.
    /// The default: the graph handles partial checksums, and frames always fit one buffer.
    #[default]
    Csum,
    /// `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN`: TCP super-frames up to 64 KiB
    /// (GSO). `TapIo` receives them as buffer chains; see the crate docs for what the graph
    /// does with chains today.
    Tso,
}

impl Offload {
    /// The `TUNSETOFFLOAD` argument.
    pub fn tun_flags(self) -> u32 {
        match self {
            Offload::None => 0,
            Offload::Csum => sys::TUN_F_CSUM,
            Offload::Tso => {
                sys::TUN_F_CSUM | sys::TUN_F_TSO4 | sys::TUN_F_TSO6 | sys::TUN_F_TSO_ECN
            }
        }
    }
}

/// How to create or attach a TAP queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes); empty or a pattern such as `vtap%d` lets the kernel
    /// choose. An existing TAP of that name is attached to.
    pub name: String,
    /// `IFF_VNET_HDR` with a 12-byte header (`virtio_net_hdr_v1`). Offloads need it.
    pub vnet_hdr: bool,
    /// Offloads to enable with `TUNSETOFFLOAD` (ignored without the virtio-net header).
    pub offload: Offload,
    /// `IFF_MULTI_QUEUE`: several fds (queues) on one device; re-attaching must use the same
    /// setting as the creation did.
    pub multi_queue: bool,
    /// `TUNSETPERSIST`: the device outlives its fds (pod TAPs survive a data-plane restart).
    pub persist: bool,
    /// Queue number of this fd, reported as `rx_queue` (`vring` in `virtio-input` traces).
    pub queue: u16,
}

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            vnet_hdr: true,
            offload: Offload::default(),
            multi_queue: false,
            persist: false,
            queue: 0,
        }
    }
}

impl TapConfig {
    /// A TAP named `name` with the defaults: virtio-net header, checksum offload, one queue,
    /// not persistent.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }

    pub fn offload(mut self, offload: Offload) -> Self {
        self.offload = offload;
        self
    }

    pub fn vnet_hdr(mut self, on: bool) -> Self {
        self.vnet_hdr = on;
        self
    }

    pub fn persist(mut self, on: bool) -> Self {
        self.persist = on;
        self
    }

    pub fn multi_queue(mut self, on: bool, queue: u16) -> Self {
        self.multi_queue = on;
        self.queue = queue;
        self
    }
}

/// One open queue of a TAP device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet_hdr: bool,
    offload: Offload,
    multi_queue: bool,
    queue: u16,
}

/// Checks an interface name as the kernel would (`dev_valid_name`), plus the `%d` pattern.
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < sys::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|c| c == b'/' || c == b':' || c == 0 || c.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

impl Tap {
    /// Creates the TAP (or attaches to the existing one of that name) in the calling thread's
    /// netns: opens `/dev/net/tun` non-blocking, `TUNSETIFF`, then `TUNSETVNETHDRSZ` 12 and
    /// `TUNSETOFFLOAD` when the virtio-net header is on, and `TUNSETPERSIST` when asked.
    pub fn open(cfg: &TapConfig) -> Result<Tap> {
        let pattern = if cfg.name.is_empty() {
            "vtap%d"
        } else {
            &cfg.name
        };
        check_ifname(pattern)?;
        let fd = rustix::fs::open(
            "/dev/net/tun",
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| Error::tap(pattern, "open /dev/net/tun", e))?;
        let mut flags = sys::IFF_TAP | sys::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= sys::IFF_VNET_HDR;
        }
        if cfg.multi_queue {
            flags |= sys::IFF_MULTI_QUEUE;
        }
        let mut ifr =
            sys::IfReq::new(pattern, flags).ok_or_else(|| Error::InvalidName(pattern.into()))?;
        sys::tun_set_iff(fd.as_fd(), &mut ifr).map_err(|e| Error::tap(pattern, "TUNSETIFF", e))?;
        let mut tap = Tap {
            fd,
            name: ifr.name(),
            vnet_hdr: cfg.vnet_hdr,
            offload: Offload::None,
            multi_queue: cfg.multi_queue,
            queue: cfg.queue,
        };
        if cfg.vnet_hdr {
            sys::tun_set_vnet_hdr_sz(tap.fd.as_fd(), vecnet_graph::VirtioNetHdr::LEN as i32)
                .map_err(|e| Error::tap(&tap.name, "TUNSETVNETHDRSZ", e))?;
        }
        // Always set, so that attaching to an existing device also resets what a previous
        // owner enabled.
        tap.set_offload(cfg.offload)?;
        if cfg.persist {
            tap.set_persist(true)?;
        }
        Ok(tap)
    }

    /// [`Tap::open`] inside the netns at `netns` (a path such as `/run/netns/NAME`, or a name),
    /// on a helper thread; the returned fd works from any netns.
    pub fn open_in(netns: &Path, cfg: &TapConfig) -> Result<Tap> {
        crate::netns::run_in(netns, || Tap::open(cfg))?
    }

    /// The kernel's name of the device (the pattern resolved).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    pub fn offload(&self) -> Offload {
        self.offload
    }

    pub fn is_multi_queue(&self) -> bool {
        self.multi_queue
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// `TUNSETPERSIST`: keep the device when the last fd closes (or not).
    pub fn set_persist(&self, on: bool) -> Result<()> {
        sys::tun_set_persist(self.fd.as_fd(), on)
            .map_err(|e| Error::tap(&self.name, "TUNSETPERSIST", e))
    }

    /// `TUNSETOFFLOAD`. Without the virtio-net header only [`Offload::None`] makes sense (the
    /// data plane could not see partial checksums), so any other value is stored as `None`.
    pub fn set_offload(&mut self, offload: Offload) -> Result<()> {
        let offload = if self.vnet_hdr {
            offload
        } else {
            Offload::None
        };
        sys::tun_set_offload(self.fd.as_fd(), offload.tun_flags())
            .map_err(|e| Error::tap(&self.name, "TUNSETOFFLOAD", e))?;
        self.offload = offload;
        Ok(())
    }

    /// The device's current `ifr_flags` as the kernel reports them (`TUNGETIFF`).
    pub fn kernel_flags(&self) -> Result<i16> {
        sys::tun_get_iff(self.fd.as_fd())
            .map(|r| r.flags)
            .map_err(|e| Error::tap(&self.name, "TUNGETIFF", e))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Gives up the fd (closing it detaches the queue; a non-persistent device then goes away).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `IFF_VNET_HDR` as `TUNGETIFF` reports it.
pub const IFF_VNET_HDR: i16 = sys::IFF_VNET_HDR;
/// `IFF_MULTI_QUEUE` as `TUNGETIFF` reports it.
pub const IFF_MULTI_QUEUE: i16 = sys::IFF_MULTI_QUEUE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_ifname("tap0").is_ok());
        assert!(check_ifname("vtap%d").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("a b").is_err());
    }

    #[test]
    fn offload_flags() {
        assert_eq!(Offload::None.tun_flags(), 0);
        assert_eq!(Offload::Csum.tun_flags(), 1);
        assert_eq!(Offload::Tso.tun_flags(), 0x0f);
    }
}
