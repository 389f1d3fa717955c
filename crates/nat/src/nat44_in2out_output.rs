//! `nat44-in2out-output` and `nat44-in2out-output-slowpath`: the output feature of the uplink
//! (after the egress ACL). The fast path translates packets of existing dynamic and identity
//! sessions; the slow path creates them — identity for node-originated traffic, else dynamic SNAT
//! to the node IP with an allocated port (SYSTEM.md 4.5.10, 6.10). Replies that an input-side
//! node translated back (marked `NAT_REPLY`: a Service's answer to a client on the Internet) pass
//! both untranslated, with no lookup and no session (9.4). As in era A, the trace prints the
//! packet's *receive* interface.

use vecnet_graph::buffer::flags;
use vecnet_graph::{FormatContext, Node, NodeCtx, RX, TX};
use vecnet_nodes::common::{drop_with, feature_next};

use crate::common::{format_nat_trace, hit, FrameScratch, NatTrace};
use crate::runtime::NatRuntime;
use crate::session::{CreateError, Dir, FlowKey, SessionKind};

const NEXT_DROP: u16 = 1;
const NEXT_SLOW_PATH: u16 = 3;

const OUTPUT_NEXTS: [&str; 5] = [
    "interface-output",
    "error-drop",
    "ip4-icmp-error",
    "nat44-in2out-output-slowpath",
    "nat44-in2out-reass",
];

const L2: usize = 14;

const ERR_PROCESSED: u16 = 0;
const ERR_MAX_SESSIONS: u16 = 1;
const ERR_OUT_OF_PORTS: u16 = 2;

/// `slow`: the slow-path node.
pub struct Nat44In2OutOutput {
    pub slow: bool,
    scratch: FrameScratch,
}

impl Nat44In2OutOutput {
    pub fn new(slow: bool) -> Self {
        Self {
            slow,
            scratch: FrameScratch::new(),
        }
    }
}

impl<R: NatRuntime> Node<R> for Nat44In2OutOutput {
    fn name(&self) -> &str {
        if self.slow {
            "nat44-in2out-output-slowpath"
        } else {
            "nat44-in2out-output"
        }
    }

    fn next_nodes(&self) -> Vec<String> {
        OUTPUT_NEXTS.map(String::from).to_vec()
    }

    fn error_strings(&self) -> &'static [&'static str] {
        &[
            "good in2out packets processed",
            "maximum sessions exceeded",
            "out of ports",
        ]
    }

    fn process(&mut self, rt: &mut R, ctx: &mut NodeCtx<'_>, frame: &[u32], nexts: &mut [u16]) {
        let (l3, t, st) = rt.nat();
        let timeouts = t.config.timeouts;
        let sc = &mut self.scratch;
        // Replies that the input side translated back are decided by their flag alone.
        sc.prepare(ctx.pool, frame, &st.sessions, L2, flags::NAT_REPLY);
        // Counted once per frame.
        let mut processed = 0u64;
        for (k, (&bi, next)) in frame.iter().zip(nexts.iter_mut()).enumerate() {
            let now = ctx.now_ns;
            let (m, frame_bytes) = ctx.pool.get_mut(bi);
            let (rx, tx, pos) = (
                m.sw_if_index[RX],
                m.sw_if_index[TX],
                m.feature_cursor as usize,
            );
            let mut session = u32::MAX;
            let mut out = true;
            let parsed = frame_bytes
                .get_mut(L2..)
                .and_then(|ip| sc.get(k).map(|x| (ip, x)));
            if m.flags & flags::NAT_REPLY != 0 {
                // The reply of a flow whose session the input side made (a client on the
                // Internet reaching a Service here: DNAT, maybe twice-NAT, by nat44-out2in on
                // the uplink), already translated back by nat44-in2out or nat44-out2in: it leaves
                // as it is, with no session made for it (SYSTEM.md 9.4, VPP's
                // nat_not_translate_output_feature). As in VPP, the fast path sends it on to the
                // slow path, which passes it: both print `session -1`.
                out = self.slow;
            } else if let Some((ip, (p, h, cand))) = parsed {
                match st.sessions.lookup_hashed(&p.key, h, cand, now, &timeouts) {
                    Some((i, dir)) => {
                        let plain = st
                            .sessions
                            .get(i)
                            .is_some_and(|s| s.kind != SessionKind::LoadBalanced);
                        if plain || self.slow {
                            hit(st, i, dir, ip, p, m, now);
                            session = i;
                            processed += 1;
                        } else {
                            out = false;
                        }
                    }
                    None if !self.slow => out = false,
                    None => {
                        let identity = t.is_pool_address(p.key.src)
                            || t.identity_for(p.key.src, p.key.sport, p.key.proto)
                                .is_some();
                        let created = if identity {
                            st.sessions.create(
                                p.key,
                                p.key,
                                SessionKind::Identity,
                                false,
                                u32::MAX,
                                true,
                                now,
                                &timeouts,
                            )
                        } else {
                            dynamic_snat(st, t, p.key, now)
                        };
                        match created {
                            Ok(i) => {
                                hit(st, i, Dir::Forward, ip, p, m, now);
                                session = i;
                                processed += 1;
                            }
                            Err(e) => {
                                let err = if e == CreateError::Full {
                                    ERR_MAX_SESSIONS
                                } else {
                                    ERR_OUT_OF_PORTS
                                };
                                *next = drop_with(ctx, bi, err, NEXT_DROP);
                                ctx.trace_with(bi, |_| NatTrace {
                                    sw_if_index: rx,
                                    next_index: *next as u32,
                                    session,
                                });
                                continue;
                            }
                        }
                    }
                }
            }
            *next = if out {
                let arc = l3
                    .interface(tx)
                    .map(|i| i.ip4_output_arc.as_slice())
                    .unwrap_or(&[]);
                feature_next(ctx, bi, arc, pos, NEXT_DROP)
            } else {
                NEXT_SLOW_PATH
            };
            ctx.trace_with(bi, |_| NatTrace {
                sw_if_index: rx,
                next_index: *next as u32,
                session,
            });
        }
        ctx.count(ERR_PROCESSED, processed);
    }

    fn format_trace(&self, data: &[u8], _: &dyn FormatContext, out: &mut String) {
        let label = if self.slow {
            "NAT44_IN2OUT_SLOW_PATH"
        } else {
            "NAT44_IN2OUT_FAST_PATH"
        };
        format_nat_trace(data, label, "session", out);
    }
}

/// Source NAT to the first main-pool address, keeping the port when it is ≥ 1024 and free.
fn dynamic_snat(
    st: &mut crate::runtime::NatState,
    t: &crate::runtime::NatTables,
    key: FlowKey,
    now: u64,
) -> Result<u32, CreateError> {
    let Some(&pool) = t.config.pool.first() else {
        // No pool: pass untranslated through an identity session.
        return st.sessions.create(
            key,
            key,
            SessionKind::Identity,
            false,
            u32::MAX,
            false,
            now,
            &t.config.timeouts,
        );
    };
    let pool = u32::from(pool);
    let free = |st: &mut crate::runtime::NatState, port: u16| {
        let reply = FlowKey {
            src: key.dst,
            dst: pool,
            sport: key.dport,
            dport: port,
            proto: key.proto,
        };
        st.sessions.key_free(&reply, now, &t.config.timeouts)
    };
    let mut port = None;
    if key.sport >= 1024 && free(st, key.sport) {
        port = Some(key.sport);
    } else {
        for _ in 0..10 {
            let p = 1024 + (st.random() % (65536 - 1024)) as u16;
            if free(st, p) {
                port = Some(p);
                break;
            }
        }
    }
    let port = port.ok_or(CreateError::Collision)?;
    let inner = FlowKey {
        src: pool,
        dst: key.dst,
        sport: port,
        dport: key.dport,
        proto: key.proto,
    };
    st.sessions.create(
        key,
        inner,
        SessionKind::Dynamic,
        false,
        u32::MAX,
        false,
        now,
        &t.config.timeouts,
    )
}
