//! The crate's error type: every variant says which operation on which object failed.

use std::path::PathBuf;

/// Errors of TAP, netlink and netns operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a TAP device failed.
    #[error("tap {name:?}: {op}: {source}")]
    Tap {
        name: String,
        op: &'static str,
        #[source]
        source: rustix::io::Errno,
    },
    /// An interface name is empty, too long (15 bytes at most) or contains `/`, NUL or spaces.
    #[error("invalid interface name {0:?}")]
    InvalidName(String),
    /// A netns name is empty, `.`/`..`, or contains `/`.
    #[error("invalid netns name {0:?}")]
    InvalidNetnsName(String),
    /// A netlink request failed.
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// No interface of that name in the current netns.
    #[error("no interface {0:?} in this netns")]
    NoSuchLink(String),
    /// A netns operation (create, delete, enter) failed.
    #[error("netns {path}: {op}: {source}")]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure (runtime creation, socket, sysctl).
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn tap(name: &str, op: &'static str, source: rustix::io::Errno) -> Self {
        Self::Tap {
            name: name.to_string(),
            op,
            source,
        }
    }

    pub(crate) fn netns(
        path: impl Into<PathBuf>,
        op: &'static str,
        source: impl Into<std::io::Error>,
    ) -> Self {
        Self::Netns {
            path: path.into(),
            op,
            source: source.into(),
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            op: op.into(),
            source: source.into(),
        }
    }

    /// The OS error number behind this error, if there is one (netlink errors included).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Tap { source, .. } => Some(source.raw_os_error()),
            Self::Netns { source, .. } | Self::Io { source, .. } => source.raw_os_error(),
            Self::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            _ => None,
        }
    }
}
