//! Packet I/O for the vecnet data plane, and the Linux side effects around it.
//!
//! * [`tap`] — TAP devices: `/dev/net/tun` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`
//!   (optionally `IFF_MULTI_QUEUE`), `TUNSETVNETHDRSZ` 12, `TUNSETOFFLOAD`, `TUNSETPERSIST`,
//!   non-blocking; created in the caller's netns or inside another one.
//! * [`tapio`] — [`TapIo`], the worker's [`vecnet_nodes::DeviceIo`] over a set of TAPs keyed by
//!   `sw_if_index`: zero-copy `readv` into pool buffers, `writev` from them, offload headers,
//!   epoll-based waiting.
//! * [`netlink`] — synchronous rtnetlink calls (links, addresses, routes, neighbours) acting in
//!   the calling thread's netns.
//! * [`netns`] — named network namespaces (`/run/netns/NAME`) and running code inside one.
//!
//! # What is implemented
//!
//! * **Batching**: `rx_burst` reads up to a whole vector per call, one frame per `readv`, round
//!   robin over the TAPs until every one says `EAGAIN`; `tx_burst` writes the run of frames the
//!   output node hands over, one `writev` each. A TAP fd has no multi-frame read or write (no
//!   `recvmmsg` on a character device); fewer system calls need io_uring or vhost-net (this
//!   kernel has no vhost-net) — not done.
//! * **Zero copy, zero allocation**: frames are read straight into pool buffers at `HEADROOM`
//!   and written from them; the iovec arrays live on the stack; no lock is taken.
//! * **Checksum offload** ([`Offload::Csum`], the default): the kernel hands over frames with a
//!   partial L4 checksum (`NEEDS_CSUM`); they keep it through the graph and leave with
//!   `NEEDS_CSUM` and `csum_start` recomputed for the outgoing L2 header, so the receiving
//!   kernel finishes the sum. Frames the data plane built itself (no `OFFLOAD_CSUM`/`GSO`
//!   flag) leave with a zero header. On a TAP opened without the virtio-net header, partial
//!   checksums are completed in software.
//! * **GSO** ([`Offload::Tso`]): super-frames up to 64 KiB are received as buffer chains
//!   (`next_buffer`, `num_buffers` = segments) and chains are sent whole with one `writev`.
//!   `TapIo` itself forwards them intact (tested TAP to TAP), and the graph carries them:
//!   `ip4-input` measures the whole chain, the other nodes rewrite the headers in the first
//!   buffer, and nodes that turn a packet into a small one of their own free the chain's tail.
//!   `vecnetd` opens its TAPs with [`Offload::Tso`] (`interfaces.pods.offloads`). With
//!   [`TapIoOptions::rx_chain`] off, frames larger than one buffer are dropped and counted
//!   (`rx_oversize`). Software segmentation (GSO to a TAP without the virtio-net header) is not
//!   implemented: such frames are dropped and counted (`tx_gso_dropped`).
//! * **Interrupt mode**: [`TapIo::wait`] / [`Waiter`] sleep in `epoll_wait` until a TAP is
//!   readable or a [`Notifier`] pokes the worker. The adaptive switch between polling and
//!   interrupt mode is the caller's loop (poll while vectors are non-empty, wait when idle).
//!
//! # Not implemented
//!
//! io_uring and vhost-net batching; AF_PACKET (the uplink); software GSO segmentation; chained
//! buffers in the graph nodes; `TUNSETSNDBUF` (a TAP's send buffer is unlimited by default; the
//! kernel-to-data-plane ring is the TAP's `txqueuelen`, settable with
//! [`netlink::set_txqueuelen`]); epoll-gated reads (every TAP is read once per poll even when
//! idle, which matters only with many TAPs).

pub mod error;
pub mod netlink;
pub mod netns;
mod sys;
pub mod tap;
pub mod tapio;

pub use error::{Error, Result};
pub use netns::NetnsHandle;
pub use tap::{Offload, Tap, TapConfig};
pub use tapio::{Notifier, TapIo, TapIoOptions, TapStats, Waiter};
