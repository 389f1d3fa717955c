//! The few raw system interfaces that neither `rustix` nor `nix` wrap safely: the TUN/TAP
//! `ioctl`s of `<linux/if_tun.h>`, and the scatter read into several pool buffers. The only
//! other `unsafe` blocks of the crate are the call of [`readv_segs`] in `tapio.rs` and
//! `unshare(CLONE_NEWNET)` in `netns.rs`.

use std::io::IoSliceMut;
use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, IntegerSetter, Opcode, Setter, Updater};

/// `IFNAMSIZ`: interface names are at most 15 bytes plus the NUL.
pub const IFNAMSIZ: usize = 16;

// `ifr_flags` bits for `TUNSETIFF` (`<linux/if_tun.h>`).
pub const IFF_TAP: i16 = 0x0002;
pub const IFF_NO_PI: i16 = 0x1000;
pub const IFF_VNET_HDR: i16 = 0x4000;
pub const IFF_MULTI_QUEUE: i16 = 0x0100;

// `TUNSETOFFLOAD` bits.
pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;
pub const TUN_F_TSO_ECN: u32 = 0x08;

const TUNSETIFF: Opcode = opcode::write::<i32>(b'T', 202);
const TUNSETPERSIST: Opcode = opcode::write::<i32>(b'T', 203);
const TUNSETOFFLOAD: Opcode = opcode::write::<u32>(b'T', 208);
const TUNGETIFF: Opcode = opcode::read::<u32>(b'T', 210);
const TUNSETVNETHDRSZ: Opcode = opcode::write::<i32>(b'T', 216);

/// `struct ifreq` as `TUNSETIFF` / `TUNGETIFF` use it: the name and `ifr_flags` at the start of
/// the union; the rest of the 40-byte structure is padding for them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IfReq {
    pub name: [u8; IFNAMSIZ],
    pub flags: i16,
    _pad: [u8; 22],
}

impl IfReq {
    /// `None` if the name does not fit `IFNAMSIZ` with its NUL or contains a NUL.
    pub fn new(name: &str, flags: i16) -> Option<Self> {
        let b = name.as_bytes();
        if b.len() >= IFNAMSIZ || b.contains(&0) {
            return None;
        }
        let mut r = Self {
            name: [0; IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        r.name[..b.len()].copy_from_slice(b);
        Some(r)
    }

    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// `ioctl(fd, TUNSETIFF, &ifr)`: creates the device or attaches to it; the kernel writes the
/// final name back into `ifr`.
pub fn tun_set_iff(fd: BorrowedFd<'_>, ifr: &mut IfReq) -> Result<(), Errno> {
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `IfReq` is `repr(C)` with the same
    // size (40 bytes) and layout for the fields the tun driver uses (name, then `ifr_flags`).
    unsafe { ioctl(fd, Updater::<TUNSETIFF, IfReq>::new(ifr)) }
}

/// `ioctl(fd, TUNGETIFF, &ifr)`: name and flags of the attached device.
pub fn tun_get_iff(fd: BorrowedFd<'_>) -> Result<IfReq, Errno> {
    let mut ifr = IfReq {
        name: [0; IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    // SAFETY: TUNGETIFF writes a `struct ifreq` (see `tun_set_iff`) into the buffer we own.
    unsafe { ioctl(fd, Updater::<TUNGETIFF, IfReq>::new(&mut ifr))? };
    Ok(ifr)
}

/// `ioctl(fd, TUNSETPERSIST, on)`.
pub fn tun_set_persist(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    // SAFETY: TUNSETPERSIST takes its argument by value as an integer (0 or 1).
    unsafe { ioctl(fd, IntegerSetter::<TUNSETPERSIST>::new_usize(on as usize)) }
}

/// `ioctl(fd, TUNSETOFFLOAD, flags)`.
pub fn tun_set_offload(fd: BorrowedFd<'_>, flags: u32) -> Result<(), Errno> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value as an unsigned integer of TUN_F_* bits.
    unsafe {
        ioctl(
            fd,
            IntegerSetter::<TUNSETOFFLOAD>::new_usize(flags as usize),
        )
    }
}

/// `ioctl(fd, TUNSETVNETHDRSZ, &size)`.
pub fn tun_set_vnet_hdr_sz(fd: BorrowedFd<'_>, size: i32) -> Result<(), Errno> {
    // SAFETY: TUNSETVNETHDRSZ reads an `int` through the pointer `Setter` passes.
    unsafe { ioctl(fd, Setter::<TUNSETVNETHDRSZ, i32>::new(size)) }
}

/// One packet-data area of a pool buffer, for a scatter read: a raw pointer and a length.
#[derive(Debug, Clone, Copy)]
pub struct RawSeg {
    pub ptr: *mut u8,
    pub len: usize,
}

/// `readv(fd, [head, segs…])`: one frame, its virtio-net header into `head` and its bytes
/// scattered over the data areas of several pool buffers, without copying.
///
/// # Safety
///
/// Every segment must point to `len` writable bytes that nothing else accesses for the duration
/// of the call, and no two segments (nor `head`) may overlap. `TapIo` guarantees this by
/// taking the pointers from distinct buffers of a `BufferPool` it holds `&mut` to for the whole
/// call.
pub unsafe fn readv_segs(
    fd: BorrowedFd<'_>,
    head: &mut [u8],
    segs: &[RawSeg],
) -> Result<usize, Errno> {
    const MAX: usize = crate::tapio::MAX_SEGS + 1;
    let mut iov: [IoSliceMut<'_>; MAX] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
    let n = segs.len().min(MAX - 1);
    iov[0] = IoSliceMut::new(head);
    for (slot, s) in iov[1..].iter_mut().zip(&segs[..n]) {
        // SAFETY: the caller guarantees `s.ptr` is valid for `s.len` writable bytes, not aliased
        // by anything else during this call and disjoint from the other segments.
        *slot = IoSliceMut::new(unsafe { std::slice::from_raw_parts_mut(s.ptr, s.len) });
    }
    rustix::io::readv(fd, &mut iov[..n + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_linux_headers() {
        // Values from <linux/if_tun.h> on x86_64 / aarch64.
        assert_eq!(TUNSETIFF as u64, 0x4004_54ca);
        assert_eq!(TUNSETPERSIST as u64, 0x4004_54cb);
        assert_eq!(TUNSETOFFLOAD as u64, 0x4004_54d0);
        assert_eq!(TUNGETIFF as u64, 0x8004_54d2);
        assert_eq!(TUNSETVNETHDRSZ as u64, 0x4004_54d8);
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn ifreq_names() {
        assert!(IfReq::new("0123456789abcdef", 0).is_none());
        let r = IfReq::new("tap%d", IFF_TAP).unwrap();
        assert_eq!(r.name(), "tap%d");
    }
}
