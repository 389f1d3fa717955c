//! Sessions across a graceful restart of `vecnetd`: the NAT44 and reflective ACL session tables
//! are saved at stop and rebuilt in the fresh data plane at start, so that packets of flows
//! established before the restart are translated as before (same backend, same twice-NAT or
//! dynamic SNAT source) and pass the reflective ACLs as session hits.
//!
//! The file is `VNSESS\0`, a little-endian `u16` format version, then [`SavedSessions`] in
//! postcard. Another version is refused as a whole rather than half understood: the sessions are
//! an optimisation, a flow whose session is lost is judged as a new one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use vecnet_acl::session::SavedAclSession;
use vecnet_nat::session::{SavedNatSession, SessionKind};

use crate::dataplane::Dataplane;

const MAGIC: &[u8; 7] = b"VNSESS\0";
/// Bumped whenever a saved session's fields or an enum's variants change.
const VERSION: u16 = 1;
const HEADER: usize = MAGIC.len() + 2;

/// What [`Dataplane::save_sessions`] takes and [`Dataplane::restore_sessions`] gives back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedSessions {
    /// Wall-clock time of the save, ns since the Unix epoch: the restore ages every session by
    /// the time since.
    pub saved_unix_ns: u64,
    pub nat: Vec<SavedNatSession>,
    pub acl: Vec<SavedAclSession>,
}

/// Why a session file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    #[error("not a vecnet session file (no VNSESS header)")]
    NotASessionFile,
    #[error("session file format version {found}; this vecnetd reads version {expected} only")]
    Version { found: u16, expected: u16 },
    #[error("corrupt session file: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("corrupt session file: {0} bytes after the sessions")]
    TrailingBytes(usize),
}

impl SavedSessions {
    /// The file's bytes: header, then the sessions.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 64 * (self.nat.len() + self.acl.len()));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        // Plain structs, vectors of known length and unit enums into a growable buffer:
        // nothing postcard can refuse.
        postcard::to_extend(self, out).expect("postcard serialises plain data into a Vec")
    }

    /// Reads a file written by [`Self::to_bytes`] of this format version; anything else is an
    /// error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionFileError> {
        let (magic, rest) = bytes
            .split_first_chunk::<7>()
            .ok_or(SessionFileError::NotASessionFile)?;
        if magic != MAGIC {
            return Err(SessionFileError::NotASessionFile);
        }
        let (version, body) = rest
            .split_first_chunk::<2>()
            .ok_or(SessionFileError::NotASessionFile)?;
        let found = u16::from_le_bytes(*version);
        if found != VERSION {
            return Err(SessionFileError::Version {
                found,
                expected: VERSION,
            });
        }
        let (saved, left) = postcard::take_from_bytes::<SavedSessions>(body)?;
        if !left.is_empty() {
            return Err(SessionFileError::TrailingBytes(left.len()));
        }
        Ok(saved)
    }
}

/// What [`Dataplane::restore_sessions`] did with the saved sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// NAT44 sessions restored.
    pub nat: u32,
    /// Reflective ACL sessions restored.
    pub acl: u32,
    /// Sessions (of either table) that timed out before or while vecnetd was down.
    pub expired: u32,
    /// Sessions not restored for any other reason: the table full (or made room for by
    /// recycling one restored before it: sessions come most idle first, so a table too small
    /// keeps the most recently active), the key already in use, an ACL session whose interface
    /// has no ACL bound now, a UDP Service session whose backend is no longer an endpoint (a
    /// running data plane purges those on the change), inconsistent data.
    pub refused: u32,
}

/// Wall-clock ns since the Unix epoch; 0 before it.
fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Dataplane {
    /// Both session tables as they stand, with idle times relative to now (graceful stop).
    pub fn save_sessions(&self) -> SavedSessions {
        let now = self.graph.clock.now_ns();
        SavedSessions {
            saved_unix_ns: unix_now_ns(),
            nat: self.worker.nat.sessions.export(now),
            acl: self.worker.acl.export(now),
        }
    }

    /// Rebuilds saved sessions, each aged by the wall-clock time since the save (none if the
    /// clock went backwards), so that sessions that timed out while vecnetd was down are
    /// dropped and the others expire when they would have.
    ///
    /// Call it after the first [`Dataplane::apply`] of the real configuration and before
    /// traffic: `apply` recreates the NAT state, sessions included, on the first apply and
    /// whenever the configuration's `seed` changes, and the ACL sessions are kept only on
    /// interfaces that have an ACL bound. Load-balanced sessions are reattached to their
    /// mapping in the new configuration by its external address.
    ///
    /// The data-plane clock starts at 0 with the data plane, so a session idle for longer than
    /// the clock has run could not keep its age: while both tables are still empty, the clock
    /// is moved forward far enough instead (trace timestamps then count from that point).
    pub fn restore_sessions(&mut self, s: &SavedSessions) -> RestoreReport {
        let down_ns = unix_now_ns().saturating_sub(s.saved_unix_ns);
        // Tables sized and the ACL pool reserved for the configuration applied last.
        self.sync_worker();
        let snap = Arc::clone(&self.worker.snap);
        let (nat_t, acl_t) = (&snap.nat.config.timeouts, &snap.acl.config.timeouts);
        let aged_nat = |x: &SavedNatSession| SavedNatSession {
            idle_ns: x.idle_ns.saturating_add(down_ns),
            ..*x
        };
        let aged_acl = |x: &SavedAclSession| SavedAclSession {
            idle_ns: x.idle_ns.saturating_add(down_ns),
            age_ns: x.age_ns.saturating_add(down_ns),
            ..*x
        };
        let oldest = s
            .nat
            .iter()
            .map(aged_nat)
            .filter(|x| !x.expired(nat_t))
            .map(|x| x.idle_ns)
            .chain(
                s.acl
                    .iter()
                    .map(aged_acl)
                    .filter(|x| x.idle_ns < x.class.timeout_ns(acl_t))
                    .map(|x| x.idle_ns),
            )
            .max()
            .unwrap_or(0);
        let now = self.graph.clock.now_ns();
        if oldest > now && self.worker.nat.sessions.is_empty() && self.worker.acl.is_empty() {
            self.graph.clock.advance(oldest - now);
        }
        let now = self.graph.clock.now_ns();

        let mut r = RestoreReport::default();
        let nat_evicted = |t: &vecnet_nat::session::SessionCounters| t.recycled + t.expired;
        let acl_evicted = |t: &vecnet_acl::runtime::AclCounters| t.recycled + t.expired;
        let evicted_before = (
            nat_evicted(&self.worker.nat.sessions.counters),
            acl_evicted(&self.worker.acl.counters),
        );
        for mut x in s.nat.iter().map(aged_nat) {
            if x.expired(nat_t) {
                r.expired += 1;
                continue;
            }
            if x.kind == SessionKind::LoadBalanced {
                match snap.nat.mapping_serving(&x.outer, &x.inner) {
                    Some(m) => x.mapping = m,
                    None if x.outer.proto == 17 => {
                        r.refused += 1;
                        continue;
                    }
                    // Like a running data plane, TCP connections outlive their endpoint.
                    None => {
                        x.mapping = snap
                            .nat
                            .mapping_for(x.outer.dst, x.outer.dport, x.outer.proto)
                            .unwrap_or(u32::MAX)
                    }
                }
            }
            match self.worker.nat.sessions.import(&x, now, nat_t) {
                Ok(Some(_)) => r.nat += 1,
                Ok(None) => r.expired += 1,
                Err(_) => r.refused += 1,
            }
        }
        for x in s.acl.iter().map(aged_acl) {
            if !snap.acl.is_bound(x.sw_if_index) {
                r.refused += 1;
                continue;
            }
            match self.worker.acl.import(&snap.acl, &x, now) {
                Ok(true) => r.acl += 1,
                Ok(false) => r.expired += 1,
                Err(_) => r.refused += 1,
            }
        }
        // Room made for an import in a full table is made by dropping sessions imported before.
        let pushed_out = |after: u64, before: u64, restored: &mut u32, refused: &mut u32| {
            let n =
                u32::try_from(after.saturating_sub(before)).map_or(*restored, |n| n.min(*restored));
            *restored -= n;
            *refused += n;
        };
        pushed_out(
            nat_evicted(&self.worker.nat.sessions.counters),
            evicted_before.0,
            &mut r.nat,
            &mut r.refused,
        );
        pushed_out(
            acl_evicted(&self.worker.acl.counters),
            evicted_before.1,
            &mut r.acl,
            &mut r.refused,
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_version_are_checked() {
        let s = SavedSessions {
            saved_unix_ns: 42,
            nat: Vec::new(),
            acl: Vec::new(),
        };
        let b = s.to_bytes();
        assert_eq!(&b[..9], b"VNSESS\0\x01\x00");
        assert_eq!(SavedSessions::from_bytes(&b).unwrap(), s);
        for n in 0..b.len() {
            assert!(SavedSessions::from_bytes(&b[..n]).is_err(), "{n} bytes");
        }
        let mut v2 = b.clone();
        v2[7] = 2;
        assert!(matches!(
            SavedSessions::from_bytes(&v2),
            Err(SessionFileError::Version {
                found: 2,
                expected: 1
            })
        ));
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            SavedSessions::from_bytes(&long),
            Err(SessionFileError::TrailingBytes(1))
        ));
    }
}
