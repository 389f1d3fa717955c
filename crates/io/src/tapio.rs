//! [`TapIo`]: the worker's TAP device I/O, a [`DeviceIo`] over a set of TAP queues keyed by
//! `sw_if_index`.
//!
//! * **Receive** (`rx_burst`): one `readv` per frame, round robin over the TAPs (one frame from
//!   each TAP that still has some per round) until every TAP says `EAGAIN` or the vector is
//!   full. The 12-byte virtio-net header goes to a scratch area and the frame straight into the
//!   data area of pool buffers (at `HEADROOM`): no copy, no allocation. The buffers are taken
//!   from the pool ahead of the read and kept as *spares*; a frame larger than one buffer (a GSO
//!   super-frame, up to 64 KiB) lands in a chain of them, linked by `next_buffer`, and
//!   `num_buffers` in the header records how many it took (as vhost's mergeable buffers do).
//! * **Transmit** (`tx_burst`): one `writev` of `[virtio-net header, segment, segment, …]` per
//!   frame, then the buffers go back to the pool. The header is all zero for frames without
//!   offload (everything the data plane built itself); a frame that arrived with `NEEDS_CSUM`
//!   (and GSO) leaves with it, `csum_start` / `hdr_len` moved to where the L4 header now is, so
//!   that the kernel completes the checksum (SYSTEM.md 11.4, gotcha 18). On a TAP without the
//!   virtio-net header the partial checksum is completed in software and GSO frames are dropped.
//! * **Idle**: [`TapIo::wait`] (or a [`Waiter`] taken before the `TapIo` is handed to the
//!   data plane) sleeps in `epoll_wait` until a TAP is readable, a [`Notifier`] pokes it or the
//!   timeout expires, so an idle worker does not spin.
//!
//! Nothing on the packet path allocates or locks; counters are plain per-TAP fields.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::io::{Errno, IoSlice};
use vecnet_graph::buffer::{flags, DATA_SIZE};
use vecnet_graph::{BufferPool, VirtioNetHdr, HEADROOM, INVALID, RX};
use vecnet_nodes::DeviceIo;
use vecnet_wire::checksum;

use crate::error::{Error, Result};
use crate::sys::{self, RawSeg};
use crate::tap::{Offload, Tap};

/// Largest frame a TAP hands over: a 64 KiB IPv4 GSO super-frame, its Ethernet header and one
/// VLAN tag.
pub const MAX_FRAME: usize = 65535 + 14 + 4;
/// Buffers needed for the largest frame.
pub const MAX_SEGS: usize = MAX_FRAME.div_ceil(DATA_SIZE);
/// Largest frame of a TAP without TSO: a 9216-byte jumbo MTU, Ethernet header and a VLAN tag.
/// Such a TAP never hands over GSO frames (the kernel segments before the TAP).
pub const MAX_FRAME_NO_TSO: usize = 9216 + 14 + 4;
const SEGS_NO_TSO: usize = MAX_FRAME_NO_TSO.div_ceil(DATA_SIZE);

const VNET_HDR_LEN: usize = VirtioNetHdr::LEN;
/// Epoll token of the wake-up eventfd (TAPs use their `sw_if_index`).
const WAKE_TOKEN: u64 = u64::MAX;
const NO_SLOT: u32 = u32::MAX;

/// Per-TAP counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames received as a chain of several buffers (GSO super-frames).
    pub rx_chained: u64,
    /// Frames dropped because they did not fit: larger than one buffer with chaining off,
    /// than [`MAX_FRAME_NO_TSO`] on a TAP without TSO, or than [`MAX_FRAME`].
    pub rx_oversize: u64,
    /// Reads not done (the frame stays queued in the kernel) or frames dropped because the pool
    /// had too few free buffers.
    pub rx_no_buffer: u64,
    /// Frames shorter than an Ethernet header, dropped.
    pub rx_runt: u64,
    /// Read errors other than `EAGAIN`.
    pub rx_errors: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped because the TAP said `EAGAIN`.
    pub tx_eagain: u64,
    /// Other write errors (device down, invalid header …); the frame is dropped.
    pub tx_errors: u64,
    /// GSO frames dropped on a TAP without the virtio-net header (no software segmentation).
    pub tx_gso_dropped: u64,
    /// Partial checksums completed in software (TAP without the virtio-net header).
    pub tx_sw_csum: u64,
}

impl TapStats {
    fn add(&mut self, o: &TapStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_chained += o.rx_chained;
        self.rx_oversize += o.rx_oversize;
        self.rx_no_buffer += o.rx_no_buffer;
        self.rx_runt += o.rx_runt;
        self.rx_errors += o.rx_errors;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_eagain += o.tx_eagain;
        self.tx_errors += o.tx_errors;
        self.tx_gso_dropped += o.tx_gso_dropped;
        self.tx_sw_csum += o.tx_sw_csum;
    }
}

/// Options of a [`TapIo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapIoOptions {
    /// Receive frames larger than one buffer as buffer chains (up to [`MAX_FRAME`]); when
    /// false they are dropped and counted in `rx_oversize`, and only one spare buffer is kept.
    pub rx_chain: bool,
}

impl Default for TapIoOptions {
    fn default() -> Self {
        Self { rx_chain: true }
    }
}

struct Slot {
    sw_if_index: u32,
    tap: Tap,
    stats: TapStats,
    /// Said `EAGAIN` (or failed) in the current receive burst.
    drained: bool,
    /// The fd is unusable (the device was deleted): skipped and out of the epoll set.
    broken: bool,
}

enum RxOutcome {
    Frame(u32),
    Dropped,
    Empty,
    NoBuffer,
}

/// TAP queues of one worker, as a [`DeviceIo`].
///
/// A `TapIo` keeps up to [`MAX_SEGS`] buffers of the pool it receives into as spares for the
/// next reads, so it must always be given the same pool (the `Dataplane`'s); see
/// [`TapIo::release_spares`].
pub struct TapIo {
    slots: Vec<Slot>,
    /// `sw_if_index` → index in `slots`, or `NO_SLOT`.
    by_sw: Vec<u32>,
    shared: Arc<WaitFds>,
    rr: usize,
    /// Buffers taken from the pool for the next reads; the top of the stack is the first
    /// segment of the next frame.
    spare: [u32; MAX_SEGS],
    n_spare: usize,
    hdr: [u8; VNET_HDR_LEN],
    opts: TapIoOptions,
    /// Sends for a `sw_if_index` that has no TAP (the frames are freed).
    pub tx_no_device: u64,
}

impl std::fmt::Debug for TapIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapIo")
            .field(
                "taps",
                &self
                    .slots
                    .iter()
                    .map(|s| (s.sw_if_index, s.tap.name()))
                    .collect::<Vec<_>>(),
            )
            .field("spare", &self.n_spare)
            .field("opts", &self.opts)
            .finish()
    }
}

struct WaitFds {
    epoll: OwnedFd,
    wake: OwnedFd,
}

impl WaitFds {
    fn wait(&self, timeout: Option<Duration>) -> Result<usize> {
        let ts = timeout.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); 32];
        let (ready, _) = loop {
            match epoll::wait(&self.epoll, &mut events, ts.as_ref()) {
                Err(Errno::INTR) => continue,
                r => break r.map_err(|e| Error::io("epoll_wait", e))?,
            }
        };
        let mut n = 0;
        for ev in ready.iter() {
            if ev.data.u64() == WAKE_TOKEN {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut b);
            } else {
                n += 1;
            }
        }
        Ok(n)
    }

    fn notify(&self) {
        // An eventfd counter only saturates; EAGAIN then means a wake-up is pending anyway.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// Sleeps until a TAP of the [`TapIo`] it came from is readable (or a [`Notifier`] wakes it).
/// Usable after the `TapIo` has been moved into a `Dataplane`; TAPs added later are included.
#[derive(Clone)]
pub struct Waiter(Arc<WaitFds>);

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

impl Waiter {
    /// Blocks until a TAP is readable, [`Notifier::notify`] is called or `timeout` passes
    /// (`None`: no timeout). Returns the number of readable TAPs (0 on timeout or wake-up).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<usize> {
        self.0.wait(timeout)
    }

    pub fn notifier(&self) -> Notifier {
        Notifier(Arc::clone(&self.0))
    }
}

/// Wakes a [`Waiter`] from another thread (new configuration, shutdown).
#[derive(Clone)]
pub struct Notifier(Arc<WaitFds>);

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl Notifier {
    pub fn notify(&self) {
        self.0.notify()
    }
}

impl TapIo {
    pub fn new() -> Result<Self> {
        Self::with_options(TapIoOptions::default())
    }

    pub fn with_options(opts: TapIoOptions) -> Result<Self> {
        let ep =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| Error::io("epoll_create", e))?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| Error::io("eventfd", e))?;
        epoll::add(
            &ep,
            &wake,
            epoll::EventData::new_u64(WAKE_TOKEN),
            epoll::EventFlags::IN,
        )
        .map_err(|e| Error::io("epoll add eventfd", e))?;
        Ok(Self {
            slots: Vec::new(),
            by_sw: Vec::new(),
            shared: Arc::new(WaitFds { epoll: ep, wake }),
            rr: 0,
            spare: [INVALID; MAX_SEGS],
            n_spare: 0,
            hdr: [0; VNET_HDR_LEN],
            opts,
            tx_no_device: 0,
        })
    }

    pub fn options(&self) -> TapIoOptions {
        self.opts
    }

    /// Adds a TAP queue as interface `sw_if_index` (its frames get `sw_if_index[RX]` = that).
    pub fn add(&mut self, sw_if_index: u32, tap: Tap) -> Result<()> {
        if sw_if_index == INVALID || sw_if_index as usize > (1 << 24) {
            return Err(Error::io(
                format!("add tap {}", tap.name()),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("sw_if_index {sw_if_index} out of range"),
                ),
            ));
        }
        if self.slot_of(sw_if_index).is_some() {
            return Err(Error::io(
                format!("add tap {}", tap.name()),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("sw_if_index {sw_if_index} already has a TAP"),
                ),
            ));
        }
        epoll::add(
            &self.shared.epoll,
            tap.fd(),
            epoll::EventData::new_u64(sw_if_index as u64),
            epoll::EventFlags::IN,
        )
        .map_err(|e| Error::tap(tap.name(), "epoll add", e))?;
        if self.by_sw.len() <= sw_if_index as usize {
            self.by_sw.resize(sw_if_index as usize + 1, NO_SLOT);
        }
        self.by_sw[sw_if_index as usize] = self.slots.len() as u32;
        self.slots.push(Slot {
            sw_if_index,
            tap,
            stats: TapStats::default(),
            drained: false,
            broken: false,
        });
        Ok(())
    }

    /// Removes the TAP of `sw_if_index` and returns it (its counters are dropped).
    pub fn remove(&mut self, sw_if_index: u32) -> Option<Tap> {
        let i = self.slot_of(sw_if_index)?;
        let slot = self.slots.swap_remove(i);
        self.by_sw[sw_if_index as usize] = NO_SLOT;
        if let Some(moved) = self.slots.get(i) {
            self.by_sw[moved.sw_if_index as usize] = i as u32;
        }
        if !slot.broken {
            let _ = epoll::delete(&self.shared.epoll, slot.tap.fd());
        }
        Some(slot.tap)
    }

    pub fn tap(&self, sw_if_index: u32) -> Option<&Tap> {
        self.slot_of(sw_if_index).map(|i| &self.slots[i].tap)
    }

    /// The `sw_if_index` values with a TAP, in receive order.
    pub fn sw_if_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().map(|s| s.sw_if_index)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn stats(&self, sw_if_index: u32) -> Option<TapStats> {
        self.slot_of(sw_if_index).map(|i| self.slots[i].stats)
    }

    /// The counters of all TAPs added up.
    pub fn total_stats(&self) -> TapStats {
        let mut t = TapStats::default();
        for s in &self.slots {
            t.add(&s.stats);
        }
        t
    }

    /// Blocks until a TAP is readable, a [`Notifier`] wakes it or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<usize> {
        self.shared.wait(timeout)
    }

    /// A handle to [`TapIo::wait`] that stays usable after the `TapIo` moved into a data plane.
    pub fn waiter(&self) -> Waiter {
        Waiter(Arc::clone(&self.shared))
    }

    /// Buffers held as spares for the next reads (at most [`MAX_SEGS`]).
    pub fn spare_buffers(&self) -> usize {
        self.n_spare
    }

    /// Gives the spare buffers back to `pool` (before dropping the `TapIo` or when checking the
    /// pool for leaks). They are taken again by the next `rx_burst`.
    pub fn release_spares(&mut self, pool: &mut BufferPool) {
        for &bi in &self.spare[..self.n_spare] {
            pool.free(bi);
        }
        self.n_spare = 0;
    }

    #[inline]
    fn slot_of(&self, sw_if_index: u32) -> Option<usize> {
        match self.by_sw.get(sw_if_index as usize) {
            Some(&i) if i != NO_SLOT => Some(i as usize),
            _ => None,
        }
    }

    /// Reads one frame from slot `i`.
    fn rx_one(&mut self, i: usize, pool: &mut BufferPool) -> RxOutcome {
        // Segments to offer the read: as many as the largest frame this TAP can hand over.
        let want = match (self.opts.rx_chain, self.slots[i].tap.offload()) {
            (false, _) => 1,
            (true, Offload::Tso) => MAX_SEGS,
            (true, _) => SEGS_NO_TSO,
        };
        while self.n_spare < want {
            match pool.alloc() {
                Some(bi) => {
                    self.spare[self.n_spare] = bi;
                    self.n_spare += 1;
                }
                None => break,
            }
        }
        if self.n_spare == 0 {
            self.slots[i].stats.rx_no_buffer += 1;
            return RxOutcome::NoBuffer;
        }
        let offer = self.n_spare.min(want);
        // The data areas of the spares, the top of the stack first.
        let mut segs = [RawSeg {
            ptr: std::ptr::null_mut(),
            len: 0,
        }; MAX_SEGS];
        for (k, seg) in segs[..offer].iter_mut().enumerate() {
            let bi = self.spare[self.n_spare - 1 - k];
            let (_, raw) = pool.raw_mut(bi);
            *seg = RawSeg {
                ptr: raw[HEADROOM..].as_mut_ptr(),
                len: DATA_SIZE,
            };
        }
        let slot = &mut self.slots[i];
        let vnet = slot.tap.has_vnet_hdr();
        let head: &mut [u8] = if vnet { &mut self.hdr } else { &mut [] };
        // SAFETY: the segments are the data areas (HEADROOM.., DATA_SIZE bytes) of distinct
        // buffers of `pool`, which are free-listed nowhere (we hold them as spares) and which
        // nothing else touches during the call: we hold `&mut BufferPool` and do not use it
        // until `readv` returns. `head` is our own scratch array.
        let r = unsafe { sys::readv_segs(slot.tap.fd(), head, &segs[..offer]) };
        let total = match r {
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => return RxOutcome::Empty,
            Err(e) => {
                slot.stats.rx_errors += 1;
                if e == Errno::BADFD || e == Errno::NODEV || e == Errno::BADF {
                    // The device is gone: stop polling it (and keep epoll from spinning on it).
                    slot.broken = true;
                    let _ = epoll::delete(&self.shared.epoll, slot.tap.fd());
                }
                return RxOutcome::Empty;
            }
        };
        let hdr_len = if vnet { VNET_HDR_LEN } else { 0 };
        if total < hdr_len + 14 {
            slot.stats.rx_runt += 1;
            return RxOutcome::Dropped;
        }
        let len = total - hdr_len;
        if len > offer * DATA_SIZE {
            // The kernel reports the full length and copies what fits.
            if offer < want {
                slot.stats.rx_no_buffer += 1;
            } else {
                slot.stats.rx_oversize += 1;
            }
            return RxOutcome::Dropped;
        }
        let used = len.div_ceil(DATA_SIZE);
        let mut hdr = if vnet {
            VirtioNetHdr::parse(&self.hdr).unwrap_or_default()
        } else {
            VirtioNetHdr::default()
        };
        hdr.num_buffers = used as u16;
        let first = self.spare[self.n_spare - 1];
        let mut rem = len;
        let mut prev = INVALID;
        for k in 0..used {
            let bi = self.spare[self.n_spare - 1 - k];
            let seg_len = rem.min(DATA_SIZE);
            rem -= seg_len;
            let m = pool.meta_mut(bi);
            m.current_data = HEADROOM as u16;
            m.current_length = seg_len as u16;
            m.next_buffer = INVALID;
            if prev != INVALID {
                pool.meta_mut(prev).next_buffer = bi;
            }
            prev = bi;
        }
        self.n_spare -= used;
        let m = pool.meta_mut(first);
        m.sw_if_index[RX] = slot.sw_if_index;
        m.vnet_hdr = hdr;
        m.rx_queue = slot.tap.queue();
        slot.stats.rx_packets += 1;
        slot.stats.rx_bytes += len as u64;
        if used > 1 {
            slot.stats.rx_chained += 1;
        }
        RxOutcome::Frame(first)
    }

    /// Sends one frame (a buffer or a chain) on `slot`; does not free it.
    fn tx_one(slot: &mut Slot, pool: &mut BufferPool, bi: u32) {
        let (m, first) = pool.get(bi);
        let offload = m.flags & (flags::OFFLOAD_CSUM | flags::GSO) != 0;
        let gso = m.flags & flags::GSO != 0 || (offload && m.vnet_hdr.gso_type != 0);
        let hdr = tx_header(m.flags, &m.vnet_hdr, first);
        let vnet = slot.tap.has_vnet_hdr();
        if !vnet && offload {
            if gso || m.next_buffer != INVALID {
                slot.stats.tx_gso_dropped += 1;
                return;
            }
            if hdr.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 {
                complete_checksum(pool.data_mut(bi), hdr.csum_start, hdr.csum_offset);
                slot.stats.tx_sw_csum += 1;
            }
        }
        let mut hdr_bytes = [0u8; VNET_HDR_LEN];
        hdr.write(&mut hdr_bytes);
        let mut iov: [IoSlice<'_>; MAX_SEGS + 1] = [IoSlice::new(&[]); MAX_SEGS + 1];
        let mut n = 0;
        if vnet {
            iov[0] = IoSlice::new(&hdr_bytes);
            n = 1;
        }
        let mut bytes = 0usize;
        let mut b = bi;
        while b != INVALID {
            if n == iov.len() {
                slot.stats.tx_errors += 1;
                return;
            }
            let (mb, d) = pool.get(b);
            iov[n] = IoSlice::new(d);
            bytes += d.len();
            n += 1;
            b = mb.next_buffer;
        }
        match rustix::io::writev(slot.tap.fd(), &iov[..n]) {
            Ok(_) => {
                slot.stats.tx_packets += 1;
                slot.stats.tx_bytes += bytes as u64;
            }
            Err(Errno::AGAIN) => slot.stats.tx_eagain += 1,
            Err(_) => slot.stats.tx_errors += 1,
        }
    }
}

impl DeviceIo for TapIo {
    fn rx_burst(&mut self, pool: &mut BufferPool, out: &mut [u32]) -> usize {
        let n_taps = self.slots.len();
        if n_taps == 0 || out.is_empty() {
            return 0;
        }
        let mut live = 0;
        for s in &mut self.slots {
            s.drained = s.broken;
            live += usize::from(!s.broken);
        }
        let start = self.rr % n_taps;
        self.rr = self.rr.wrapping_add(1);
        let mut n = 0;
        // Reads that return dropped frames (runts, oversize) count too, so that a TAP flooding
        // garbage cannot keep the worker in this loop.
        let mut budget = 2 * out.len();
        'rounds: while live > 0 && budget > 0 {
            for k in 0..n_taps {
                let mut i = start + k;
                if i >= n_taps {
                    i -= n_taps;
                }
                if self.slots[i].drained {
                    continue;
                }
                match self.rx_one(i, pool) {
                    RxOutcome::Frame(bi) => {
                        out[n] = bi;
                        n += 1;
                        budget -= 1;
                        if n == out.len() {
                            break 'rounds;
                        }
                    }
                    RxOutcome::Dropped => {
                        budget -= 1;
                        if budget == 0 {
                            break 'rounds;
                        }
                    }
                    RxOutcome::Empty => {
                        self.slots[i].drained = true;
                        live -= 1;
                    }
                    RxOutcome::NoBuffer => break 'rounds,
                }
            }
        }
        n
    }

    fn tx_burst(&mut self, sw_if_index: u32, pool: &mut BufferPool, bufs: &[u32]) {
        match self.slot_of(sw_if_index) {
            Some(i) => {
                let slot = &mut self.slots[i];
                for &bi in bufs {
                    Self::tx_one(slot, pool, bi);
                    pool.free(bi);
                }
            }
            None => {
                self.tx_no_device += bufs.len() as u64;
                pool.free_burst(bufs);
            }
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl AsFd for TapIo {
    /// The epoll fd: readable when a TAP is (for embedding in another event loop).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.epoll.as_fd()
    }
}

/// Offset of the L4 header and the IP protocol in an Ethernet frame carrying IPv4 (after up to
/// two VLAN tags), or `None`.
fn ip4_l4(frame: &[u8]) -> Option<(usize, u8)> {
    let mut l2 = 14;
    let mut et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    for _ in 0..2 {
        if et != 0x8100 && et != 0x88a8 {
            break;
        }
        et = u16::from_be_bytes([*frame.get(l2 + 2)?, *frame.get(l2 + 3)?]);
        l2 += 4;
    }
    if et != 0x0800 {
        return None;
    }
    let v_ihl = *frame.get(l2)?;
    if v_ihl >> 4 != 4 {
        return None;
    }
    let ihl = (v_ihl & 0x0f) as usize * 4;
    let proto = *frame.get(l2 + 9)?;
    (ihl >= 20).then_some((l2 + ihl, proto))
}

/// The virtio-net header to send `frame` with: zero unless the buffer carries an offload
/// (`OFFLOAD_CSUM` / `GSO`); then the received header, with `NEEDS_CSUM`, `csum_start` at the
/// frame's L4 header (the L2 header may have changed length since receive) and `hdr_len` moved
/// by the same amount.
pub fn tx_header(buf_flags: u32, rx: &VirtioNetHdr, frame: &[u8]) -> VirtioNetHdr {
    if buf_flags & (flags::OFFLOAD_CSUM | flags::GSO) == 0 {
        return VirtioNetHdr::default();
    }
    let mut h = *rx;
    h.num_buffers = 0;
    if let Some((l4, proto)) = ip4_l4(frame) {
        let l4 = l4 as u16;
        let delta = l4 as i32 - h.csum_start as i32;
        h.flags |= VirtioNetHdr::F_NEEDS_CSUM;
        h.csum_start = l4;
        if h.csum_offset == 0 {
            h.csum_offset = match proto {
                6 => 16,
                17 => 6,
                _ => 0,
            };
        }
        if h.hdr_len != 0 {
            h.hdr_len = (h.hdr_len as i32 + delta).clamp(0, u16::MAX as i32) as u16;
        }
    }
    h
}

/// Completes a partial checksum in place: the field at `start + offset` holds the folded
/// pseudo-header sum; the Internet checksum over `frame[start..]` (field included) is the final
/// value. UDP's zero is sent as 0xffff.
pub fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> bool {
    let (start, pos) = (start as usize, start as usize + offset as usize);
    if pos + 2 > frame.len() {
        return false;
    }
    let mut c = checksum::checksum(&frame[start..]);
    if c == 0 && offset == 6 {
        c = 0xffff;
    }
    frame[pos..pos + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(l2_extra: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + l2_extra];
        if l2_extra == 4 {
            f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
            f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
        } else {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        }
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(20u16 + 24).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 1, 1, 3]);
        ip[16..20].copy_from_slice(&[10, 1, 1, 4]);
        f.extend_from_slice(&ip);
        let mut tcp = [0u8; 24];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 0x50;
        tcp[20..24].copy_from_slice(b"abcd");
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn zero_header_without_offload() {
        let rx = VirtioNetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        // A locally built frame (offload flags cleared) goes out with a zero header even if the
        // buffer still holds the received one.
        assert_eq!(
            tx_header(flags::LOCALLY_ORIGINATED, &rx, &tcp_frame(0)),
            VirtioNetHdr::default()
        );
    }

    #[test]
    fn header_follows_l2_length() {
        let rx = VirtioNetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let h = tx_header(flags::OFFLOAD_CSUM | flags::GSO, &rx, &tcp_frame(0));
        assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (34, 16, 54));
        assert_eq!((h.gso_type, h.gso_size, h.num_buffers), (1, 1448, 0));
        // Four more bytes of L2 (a VLAN tag): everything moves by four.
        let h = tx_header(flags::OFFLOAD_CSUM | flags::GSO, &rx, &tcp_frame(4));
        assert_eq!((h.csum_start, h.hdr_len), (38, 58));
        // OFFLOAD_CSUM without a received header: built from the frame.
        let h = tx_header(flags::OFFLOAD_CSUM, &VirtioNetHdr::default(), &tcp_frame(0));
        assert_eq!((h.flags, h.csum_start, h.csum_offset), (1, 34, 16));
    }

    #[test]
    fn software_checksum_completion() {
        let mut f = tcp_frame(0);
        // Partial: the folded pseudo-header sum in the field.
        let ph = checksum::pseudo_header(
            std::net::Ipv4Addr::new(10, 1, 1, 3),
            std::net::Ipv4Addr::new(10, 1, 1, 4),
            6,
            24,
        );
        f[34 + 16..34 + 18].copy_from_slice(&checksum::fold(ph).to_be_bytes());
        assert!(complete_checksum(&mut f, 34, 16));
        // Verify: pseudo-header + segment sums to 0xffff.
        let total = checksum::add(ph, checksum::sum(&f[34..]));
        assert_eq!(checksum::fold(total), 0xffff);
        assert!(!complete_checksum(&mut f, 60, 16));
    }

    #[test]
    fn max_segs() {
        assert_eq!(MAX_SEGS, 33);
        const { assert!(MAX_SEGS * DATA_SIZE >= MAX_FRAME) };
    }
}
